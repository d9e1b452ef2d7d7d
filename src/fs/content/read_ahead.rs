//! Read-ahead planning for values read by block: which block runs to fetch next, as a pure
//! function of the seek table, the reader's position, the window and the missing blocks.

use super::{MAX_AHEAD_STORED, READ_AHEAD_GET};
use crate::seek::SeekTable;

/// The ranged GETs (block runs) a read-ahead issues, given the reader's last block, the window
/// (blocks) and the blocks of the window not yet fetched or being fetched (ascending).
///
/// The window is cut where it would span more than [`MAX_AHEAD_STORED`] stored bytes. Missing
/// blocks are grouped into runs of about [`READ_AHEAD_GET`] stored bytes; a short group at the end
/// waits for the window to slide further, unless it is the value's tail or the reader is already
/// within half a window of it.
pub(super) fn plan_read_ahead(
    table: &SeekTable,
    last: usize,
    window: usize,
    missing: &[usize],
) -> Vec<(usize, usize)> {
    let n = table.blocks.len();
    let stored = |a: usize, b: usize| {
        let r = table.stored_range(a, b);
        r.end - r.start
    };
    // How many blocks past `last` the window reaches within the stored budget.
    let mut reach = window.min(n.saturating_sub(last + 1));
    while reach > 1 && stored(last + 1, last + reach) > MAX_AHEAD_STORED {
        reach -= 1;
    }
    let mut plan = Vec::new();
    let mut group: Option<(usize, usize)> = None;
    for &i in missing {
        if i <= last || i > last + reach {
            break;
        }
        group = match group {
            Some((a, b)) if b + 1 == i => Some((a, i)),
            Some(g) => {
                plan.push(g);
                Some((i, i))
            }
            None => Some((i, i)),
        };
        if let Some((a, b)) = group {
            if stored(a, b) >= READ_AHEAD_GET {
                plan.push((a, b));
                group = None;
            }
        }
    }
    if let Some((a, b)) = group {
        if b + 1 == n || a <= last + reach / 2 {
            plan.push((a, b));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of `n` blocks of 1 MiB, each stored in `stored` bytes.
    fn table(n: usize, stored: u64) -> SeekTable {
        SeekTable {
            raw: false,
            block_size: 1 << 20,
            content_size: n as u64 * (1 << 20),
            blocks: (0..n as u64).map(|i| 7 + i * stored).collect(),
            frame_end: 7 + n as u64 * stored,
        }
    }

    #[test]
    fn read_ahead_gets_are_large_and_wait_for_a_full_group() {
        let t = table(100, 1 << 20);
        // Window 64 ahead of block 0, nothing fetched: four GETs of 16 blocks (16 MiB each).
        let missing: Vec<usize> = (1..=64).collect();
        assert_eq!(
            plan_read_ahead(&t, 0, 64, &missing),
            vec![(1, 16), (17, 32), (33, 48), (49, 64)]
        );
        // The window slid by one block: the one new block waits for a group's worth.
        assert_eq!(plan_read_ahead(&t, 1, 64, &[65]), vec![]);
        // Full groups are fetched as soon as they are in the window.
        let missing: Vec<usize> = (33..=80).collect();
        assert_eq!(
            plan_read_ahead(&t, 16, 64, &missing),
            vec![(33, 48), (49, 64), (65, 80)]
        );
        // A short group waits until the reader is within half a window of it.
        let missing: Vec<usize> = (60..=70).collect();
        assert_eq!(plan_read_ahead(&t, 4, 64, &missing), vec![]);
        assert_eq!(plan_read_ahead(&t, 30, 64, &missing), vec![(60, 70)]);
    }

    #[test]
    fn read_ahead_fetches_the_tail_and_respects_the_stored_budget() {
        let t = table(10, 1 << 20);
        assert_eq!(plan_read_ahead(&t, 6, 32, &[8, 9]), vec![(8, 9)]);
        // Compressible blocks (256 KiB stored): groups of 64 blocks; the window spans 64 blocks
        // (16 MiB stored, within the budget).
        let t = table(1000, 256 << 10);
        let missing: Vec<usize> = (1..=64).collect();
        assert_eq!(plan_read_ahead(&t, 0, 64, &missing), vec![(1, 64)]);
        // Incompressible blocks larger than 1 MiB: the stored budget (64 MiB) cuts the window
        // to 32 blocks, in groups of 8.
        let t = table(1000, 2 << 20);
        let missing: Vec<usize> = (1..=64).collect();
        assert_eq!(
            plan_read_ahead(&t, 0, 64, &missing),
            (0..4).map(|g| (1 + 8 * g, 8 + 8 * g)).collect::<Vec<_>>()
        );
    }
}

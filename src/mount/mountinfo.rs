//! The one reader of `/proc/self/mountinfo`: which mounts exist, where, and whether they are
//! remotedict's. Paths there escape space, tab, newline and backslash as `\040`, `\011`, `\012`
//! and `\134`; they are decoded here.

use std::path::PathBuf;

/// One line of mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (decoded).
    pub mount_point: PathBuf,
    /// The filesystem type, e.g. `fuse.remotedict`.
    pub fs_type: String,
    /// The mount source, e.g. `remotedict:local:/srv/c1/folder` (decoded).
    pub source: String,
}

impl MountEntry {
    /// Whether remotedict serves this mount (its source is `remotedict:…`).
    pub fn is_remotedict(&self) -> bool {
        self.source.starts_with("remotedict:")
    }
}

/// Decodes mountinfo's octal escapes (`\NNN`); anything else is kept as it is.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one line: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER`.
pub fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let mount_point = fields.get(4)?;
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fs_type: unescape(fields.get(sep + 1)?),
        source: unescape(fields.get(sep + 2).unwrap_or(&"")),
    })
}

/// Parses a whole mountinfo text, skipping lines that are not of its form.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// This process's mounts (none if mountinfo cannot be read).
pub fn read() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(unescape(r"/mnt/a\040b\011c\012d\134e"), "/mnt/a b\tc\nd\\e");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(
            unescape(r"trailing\04"),
            r"trailing\04",
            "a short escape is kept"
        );
        assert_eq!(unescape(r"\9999"), r"\9999", "not octal");
    }

    #[test]
    fn lines_are_parsed() {
        let text = "36 35 98:0 / /mnt/my\\040data rw,noatime master:1 - fuse.remotedict remotedict:local:/srv/c1/f rw,user_id=0\n\
                    22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n\
                    garbage\n";
        let got = parse(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].mount_point, PathBuf::from("/mnt/my data"));
        assert_eq!(got[0].fs_type, "fuse.remotedict");
        assert!(got[0].is_remotedict());
        assert_eq!(got[1].mount_point, PathBuf::from("/proc"));
        assert!(!got[1].is_remotedict());
    }
}

//! The command runners: the dictionary commands, fsck, completions and the man page (`status`
//! has its own module).

use anyhow::{bail, Context, Result};

use super::args::{Cli, Command};
use crate::config::{open_store, StoreConfig};

/// `remotedict fsck [--repair] [--upgrade]`: returns whether the folder is (now) consistent.
pub fn fsck(cfg: &StoreConfig, repair: bool, upgrade: bool) -> Result<bool> {
    crate::runtime::build(2)?.block_on(async {
        let store = open_store(cfg).await?;
        let layout = crate::layout::Layout::new(&cfg.folder)?;
        let (report, blobs) = crate::fsck::check(&store, &layout).await?;
        if upgrade && report.index_error.is_none() {
            let index = crate::index::SharedIndex::new(
                store.clone(),
                layout.index_blob(),
                std::time::Duration::ZERO,
            );
            index.current().await?;
            let was = index.format();
            index.compact_now().await.context("upgrading the index")?;
            println!(
                "index: format {} -> 2, generation {}",
                was.map_or_else(|| "none".to_string(), |f| f.to_string()),
                index.generation().unwrap_or_default()
            );
        }
        for line in report.lines() {
            println!("{line}");
        }
        println!(
            "{}: {} keys in the index, {} blobs; {}",
            store.describe(),
            report.keys,
            report.blobs,
            if report.is_clean() {
                "clean"
            } else {
                "problems found"
            }
        );
        if report.is_clean() || !repair {
            return Ok(report.is_clean());
        }
        let n = crate::fsck::repair(&store, &layout, &report, &blobs).await?;
        println!("repaired: {n} index change(s)");
        Ok(true)
    })
}

/// Runs one of the dictionary commands.
pub fn dict_command(command: Command, cfg: &StoreConfig) -> Result<()> {
    use crate::dict::{Dict, Endpoint};
    crate::runtime::build(2)?.block_on(async {
        let open = || async {
            let s = open_store(cfg).await?;
            anyhow::Ok(Dict::new(s, crate::layout::Layout::new(&cfg.folder)?))
        };
        match command {
            Command::Ls {
                prefix, long, json, ..
            } => {
                let d = open().await?;
                let entries = d.ls(prefix.as_deref().unwrap_or("")).await?;
                print!("{}", Dict::render_ls(&entries, long, json));
            }
            Command::Get { key, dest, .. } => {
                open()
                    .await?
                    .get(&key, Endpoint::parse(dest.as_deref()))
                    .await?;
            }
            Command::Put { items, .. } => {
                let pairs: Vec<(String, Endpoint)> = if items.len() <= 2 && !items[0].contains('=')
                {
                    vec![(
                        items[0].clone(),
                        Endpoint::parse(items.get(1).map(String::as_str)),
                    )]
                } else {
                    items
                        .iter()
                        .map(|i| match i.split_once('=') {
                            Some((k, f)) => Ok((k.to_string(), Endpoint::parse(Some(f)))),
                            None => Err(anyhow::anyhow!(
                                "{i:?}: use KEY=FILE for each key when putting several"
                            )),
                        })
                        .collect::<Result<_>>()?
                };
                let n = open().await?.put(pairs).await?;
                log::info!("{n} key(s) stored in one index commit");
            }
            Command::Rm { keys, .. } => open().await?.rm(&keys).await?,
            Command::Stat { key, .. } => print!("{}", open().await?.stat(&key).await?),
            Command::Lock {
                key,
                duration,
                wait,
                ..
            } => {
                let d = crate::store::LeaseDuration::from_secs(duration)
                    .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
                println!("{}", open().await?.lock(&key, d, wait).await?);
            }
            Command::Unlock { key, lease_id, .. } => {
                open().await?.unlock(&key, lease_id.as_deref()).await?;
            }
            _ => bail!("not a dictionary command"),
        }
        Ok(())
    })
}

/// `remotedict completions SHELL` and `remotedict man`.
pub fn generate(command: Command) -> Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    match command {
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "remotedict", &mut buf);
            write_stdout(&buf)?;
        }
        Command::Man { command } => {
            let page = match command {
                None => cmd,
                Some(name) => {
                    let Some(sub) = cmd.find_subcommand(&name).cloned() else {
                        let names: Vec<String> = cmd
                            .get_subcommands()
                            .map(|s| s.get_name().to_string())
                            .collect();
                        bail!(
                            "no command {name:?}; the commands are: {}",
                            names.join(", ")
                        );
                    };
                    // (clap names are `'static`; this process prints one page and exits.)
                    let full: &'static str =
                        Box::leak(format!("remotedict-{name}").into_boxed_str());
                    sub.name(full).bin_name(full)
                }
            };
            let mut buf = Vec::new();
            clap_mangen::Man::new(page)
                .render(&mut buf)
                .context("rendering the man page")?;
            write_stdout(&buf)?;
        }
        _ => bail!("not a generator command"),
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(buf: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(buf) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

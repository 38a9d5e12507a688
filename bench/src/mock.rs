//! The mock cluster both clients talk to: one `tikv-cli mock` process, started here and
//! killed when dropped. A separate process, so that the rusage of this process is the
//! clients' cost alone.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// A running `tikv-cli mock`.
pub(crate) struct MockProcess {
    child: Child,
    /// The PD address it printed.
    pub(crate) pd: String,
    /// Kept open: the mock prints more lines after the PD address and must not meet a closed
    /// pipe.
    _stdout: BufReader<ChildStdout>,
}

impl MockProcess {
    /// Starts `binary --hex mock --stores <stores> --splits <splits> --spread-leaders` and
    /// waits for its PD address. The mock writes the split keys memcomparable-encoded, as
    /// TiKV writes transactional region boundaries, or as they are with `raw` (RawKV V1).
    pub(crate) fn start(
        binary: &Path,
        stores: u32,
        splits: &[Vec<u8>],
        raw: bool,
    ) -> Result<Self, String> {
        let splits: Vec<String> = splits
            .iter()
            .map(|k| k.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        let mut child = Command::new(binary)
            .args([
                "--hex",
                "mock",
                "--stores",
                &stores.to_string(),
                "--spread-leaders",
            ])
            .arg("--splits")
            .arg(splits.join(","))
            .args(raw.then_some("--raw-splits"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} ({e}); build it first: cargo build --release -p tikv-cli",
                    binary.display()
                )
            })?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            return Err("the mock's stdout was not piped".into());
        };
        let mut stdout = BufReader::new(out);
        let mut first = String::new();
        let read = stdout.read_line(&mut first);
        let pd = match (read, first.strip_prefix("PD endpoint: ")) {
            (Ok(_), Some(address)) => address.trim().to_string(),
            (result, _) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the mock did not print its PD address (read {result:?}, line {first:?})"
                ));
            }
        };
        Ok(MockProcess {
            child,
            pd,
            _stdout: stdout,
        })
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

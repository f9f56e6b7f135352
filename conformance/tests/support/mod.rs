//! What the tests that run this workspace's binaries share.

use std::process::Command;

/// A command running `bin` (a binary of this workspace) directly or, when `ENGRAM_TEST_RUNNER`
/// is set, through that runner, as cargo's `target.<triple>.runner` runs the test binaries
/// themselves: `ENGRAM_TEST_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"` runs an aarch64
/// build's binaries on an x86-64 machine.
pub fn command(bin: &str) -> Command {
    let runner = std::env::var("ENGRAM_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

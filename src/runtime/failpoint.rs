//! Failpoints for crash tests: `ATTRIB_TEST_FAILPOINT=<name>` makes the process abort (as a
//! SIGKILL would stop it: no commit, no clean shutdown) the first time it reaches the named
//! point. Unset in production; the tests that set it check that what follows a crash at that
//! exact point is still exactly once.
//!
//! - `forward-move`: the device stage has forwarded a moved journey, and it is on the broker
//!   (flushed), but its transaction is not committed;
//! - `apply-move`: the customer stage has applied a moved journey, before its commit.
//!
//! Others hold the process instead, when set as `<name>:<dir>`: the first time the point is
//! reached, attrib creates `<dir>/held`, waits until the test creates `<dir>/release`, then
//! creates `<dir>/resumed` and goes on.
//!
//! - `hold-assign`: at the end of the assignment handler (which runs while librdkafka already
//!   fetches the partitions): a restore that takes as long as the test wants;
//! - `hold-restore`: in a restore, once its progress metrics were first updated.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn setting() -> Option<&'static str> {
    static SET: OnceLock<Option<String>> = OnceLock::new();
    SET.get_or_init(|| std::env::var("ATTRIB_TEST_FAILPOINT").ok())
        .as_deref()
}

/// Whether the failpoint `name` is set.
pub(super) fn armed(name: &str) -> bool {
    setting() == Some(name)
}

/// The argument of the failpoint `name`, set as `<name>:<argument>`.
fn argument(name: &str) -> Option<&'static str> {
    setting()?.strip_prefix(name)?.strip_prefix(':')
}

/// Holds the process at the failpoint `name` (see the module), the first time it is reached.
pub(super) fn hold(name: &str) {
    static DONE: AtomicBool = AtomicBool::new(false);
    let Some(dir) = argument(name).map(Path::new) else {
        return;
    };
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    let touch = |file: &str| {
        if let Err(e) = std::fs::write(dir.join(file), b"") {
            eprintln!("failpoint {name}: cannot create {file}: {e}");
        }
    };
    touch("held");
    while !dir.join("release").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    touch("resumed");
}

/// Stops the process at once, as SIGKILL would.
pub(super) fn crash(name: &str) -> ! {
    eprintln!("failpoint {name}: aborting");
    std::process::abort()
}

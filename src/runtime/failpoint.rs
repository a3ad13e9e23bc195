//! Failpoints for crash tests: `ATTRIB_TEST_FAILPOINT=<name>` makes the process abort (as a
//! SIGKILL would stop it: no commit, no clean shutdown) the first time it reaches the named
//! point. Unset in production; the tests that set it check that what follows a crash at that
//! exact point is still exactly once.
//!
//! - `forward-move`: the device stage has forwarded a moved journey, and it is on the broker
//!   (flushed), but its transaction is not committed;
//! - `apply-move`: the customer stage has applied a moved journey, before its commit.
//!
//! One failpoint holds the process instead: `hold-assign:<dir>` makes the first assignment's
//! handler (which runs while librdkafka already fetches the partitions) create `<dir>/held`,
//! wait until the test creates `<dir>/release`, then create `<dir>/assigned` and return — a
//! restore that takes as long as the test wants.

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

/// The `hold-assign` failpoint, the first time it is reached (see the module).
pub(super) fn hold_assign() {
    static DONE: AtomicBool = AtomicBool::new(false);
    let Some(dir) = argument("hold-assign").map(Path::new) else {
        return;
    };
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    let touch = |name: &str| {
        if let Err(e) = std::fs::write(dir.join(name), b"") {
            eprintln!("failpoint hold-assign: cannot create {name}: {e}");
        }
    };
    touch("held");
    while !dir.join("release").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    touch("assigned");
}

/// Stops the process at once, as SIGKILL would.
pub(super) fn crash(name: &str) -> ! {
    eprintln!("failpoint {name}: aborting");
    std::process::abort()
}

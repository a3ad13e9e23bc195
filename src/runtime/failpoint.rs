//! Failpoints for crash tests: `ATTRIB_TEST_FAILPOINT=<name>` makes the process abort (as a
//! SIGKILL would stop it: no commit, no clean shutdown) the first time it reaches the named
//! point. Unset in production; the tests that set it check that what follows a crash at that
//! exact point is still exactly once.
//!
//! - `forward-move`: the device stage has forwarded a moved journey, and it is on the broker
//!   (flushed), but its transaction is not committed;
//! - `apply-move`: the customer stage has applied a moved journey, before its commit.

use std::sync::OnceLock;

/// Whether the failpoint `name` is set.
pub(super) fn armed(name: &str) -> bool {
    static SET: OnceLock<Option<String>> = OnceLock::new();
    SET.get_or_init(|| std::env::var("ATTRIB_TEST_FAILPOINT").ok())
        .as_deref()
        == Some(name)
}

/// Stops the process at once, as SIGKILL would.
pub(super) fn crash(name: &str) -> ! {
    eprintln!("failpoint {name}: aborting");
    std::process::abort()
}

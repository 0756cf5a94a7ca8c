//! A fake clock shared by real processes: Debian's libfaketime (package `faketime`), preloaded
//! into `loop-store` and `loop-token-operator`, reads an offset from a file that the test
//! rewrites. Both processes then agree on a "now" that the test moves forward by hours in an
//! instant, so schedules of hours are proven on the real binaries without waiting.
//!
//! Only the wall clock moves (`FAKETIME_DONT_FAKE_MONOTONIC=1`): timers, timeouts and tokio's
//! sleeps keep running in real time, as they would in production. The control plane is not
//! shifted; the offsets stay well inside the validity of its certificates (7 days).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

/// Where Debian (and derivatives) install the thread-safe libfaketime.
const LIBFAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
];

pub struct FakeClock {
    _dir: tempfile::TempDir,
    file: PathBuf,
    library: PathBuf,
    offset: Mutex<SignedDuration>,
}

impl FakeClock {
    /// A clock at the real time (offset zero). Panics when libfaketime is not installed: the
    /// test needs it (`.ci/run` installs it: `apt-get install faketime`).
    pub fn new() -> FakeClock {
        let library = std::env::var_os("LOOP_TEST_LIBFAKETIME")
            .map(PathBuf::from)
            .or_else(|| LIBFAKETIME.iter().map(PathBuf::from).find(|p| p.exists()))
            .unwrap_or_else(|| {
                panic!(
                    "libfaketime not found (apt-get install faketime, or set LOOP_TEST_LIBFAKETIME)"
                )
            });
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let clock = FakeClock {
            file: dir.path().join("faketime.rc"),
            _dir: dir,
            library,
            offset: Mutex::new(SignedDuration::ZERO),
        };
        clock.write(SignedDuration::ZERO);
        clock
    }

    /// The environment that puts a process on this clock.
    pub fn envs(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", self.library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            // Read the file at every call, so a move is seen at once.
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
        self.write(*offset);
    }

    /// "Now" on this clock.
    pub fn now(&self) -> Timestamp {
        let offset = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        Timestamp::now() + offset
    }

    /// Write the offset atomically (a process never reads a half-written file).
    fn write(&self, offset: SignedDuration) {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{:+}\n", offset.as_secs()))
            .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &self.file)
            .unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
    }
}

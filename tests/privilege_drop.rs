//! Ops after a privilege drop act with the new credentials, in every
//! throughput mode and on the Queue backend. An SQPOLL ring's kernel
//! submission thread keeps the credentials the ring was created with, so the
//! ring must refuse what would run with them. Each mode runs in a child
//! process (this binary again), so no drop touches the test process; a binary
//! of its own, so no other test shares that process's threads.
#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt;

use spargio::RuntimeBuilder;

/// Set in the environment of the child process that
/// [`privilege_drop_child`] runs in: the throughput mode it builds.
const CHILD_MODE: &str = "SPARGIO_TEST_PRIVILEGE_DROP_MODE";
/// The root-only file the child tries to open after dropping privileges.
const CHILD_FILE: &str = "SPARGIO_TEST_PRIVILEGE_DROP_FILE";
/// The user and group the child drops to (`nobody`/`nogroup`).
const NOBODY: u32 = 65_534;

/// The modes the child is run in: SQPOLL, the default rings, DEFER_TASKRUN,
/// and the Queue backend.
const MODES: [&str; 4] = ["sqpoll", "default", "defer_taskrun", "queue"];

/// A runtime built as root, then a privilege drop: an open of a root-only
/// 0600 file must fail with `EACCES`, in every throughput mode. An SQPOLL
/// ring's submission thread keeps the credentials the ring was created with,
/// so without a check the kernel would open it as root. Each mode runs in a
/// child process (this binary, running [`privilege_drop_child`]), so the drop
/// never touches this process.
#[test]
fn ops_after_a_privilege_drop_use_the_new_credentials() {
    if spargio::sys::os::effective_uid() != 0 {
        println!("SKIPPED: needs root to drop privileges");
        return;
    }
    let dir = std::env::temp_dir().join(format!("spargio-privilege-drop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Searchable by everyone, so only the file's own mode keeps `nobody` out.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.join("root-only");
    std::fs::write(&secret, b"secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut failures = Vec::new();
    for mode in MODES {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "privilege_drop_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_MODE, mode)
            .env(CHILD_FILE, &secret)
            .output()
            .expect("run the test binary as a child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // libtest may print the test's name before the child's own line.
        let said = |what: &str| {
            stdout
                .lines()
                .find_map(|l| l.find(what).map(|at| l[at..].to_owned()))
        };
        if let Some(line) = said("SKIPPED") {
            println!("{mode}: {line}");
            continue;
        }
        match said("REFUSED") {
            Some(line) if out.status.success() => println!("{line}"),
            _ => failures.push(format!("{mode}: {}\n{stdout}\n{stderr}", out.status)),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(failures.is_empty(), "modes that failed:\n{}", failures.join("\n"));
}

/// The child half of [`ops_after_a_privilege_drop_use_the_new_credentials`];
/// does nothing unless that test started it.
#[test]
fn privilege_drop_child() {
    let (Ok(mode), Ok(file)) = (std::env::var(CHILD_MODE), std::env::var(CHILD_FILE)) else {
        return;
    };
    let builder = RuntimeBuilder::new().shards(2).fallback_to_queue(false);
    let builder = match mode.as_str() {
        "sqpoll" => builder.io_uring_throughput_mode(true),
        "defer_taskrun" => builder.io_uring_throughput_mode(false),
        "default" => builder,
        "queue" => builder.backend(spargio::Backend::Queue),
        other => panic!("unknown mode {other}"),
    };
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            println!("SKIPPED: the {mode} runtime cannot be built here: {e}");
            return;
        }
    };
    let open = |file: String| async move { spargio::fs::File::open(file).await.map(drop) };
    // As root, the runtime opens it.
    rt.block_on(open(file.clone()))
        .unwrap()
        .expect("root opens its own file");
    spargio::sys::os::drop_privileges(NOBODY, NOBODY).expect("drop to nobody");
    assert_eq!(spargio::sys::os::effective_uid(), NOBODY);
    let err = rt
        .block_on(open(file.clone()))
        .unwrap()
        .expect_err("nobody must not open a root-only file");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    // The runtime itself goes on: a task on the other shard, woken through
    // a message from this one, still runs.
    let h = rt.handle().clone();
    let other = rt
        .block_on(async move { h.spawn_pinned(1, async { 7 }).unwrap().await.unwrap() })
        .unwrap();
    assert_eq!(other, 7);
    println!("REFUSED: {mode}: {err}");
    rt.shutdown();
}

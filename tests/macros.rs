//! `#[spargio::main]` and `#[spargio::test]`: the runtime each builds (shard
//! count, backend), return types, `?`, panics, non-`Send` bodies, and the
//! panic when the runtime cannot start. The compile errors for misuse are
//! pinned by the `compile_fail` doctests on the re-exports in src/lib.rs.
#![cfg(feature = "macros")]
#![forbid(unsafe_code)]

mod common;

use std::io;
use std::rc::Rc;

use spargio::{Backend, RuntimeHandle};

fn current() -> RuntimeHandle {
    RuntimeHandle::current().expect("the body runs on a shard")
}

fn expected_default_backend() -> Backend {
    match common::io_uring_unavailable() {
        Some(reason) => {
            eprintln!("io_uring unavailable ({reason}): the attribute falls back to the Queue backend");
            Backend::Queue
        }
        None => Backend::IoUring,
    }
}

#[spargio::test]
async fn a_test_runtime_has_one_shard_by_default() {
    let rt = current();
    assert_eq!(rt.shard_count(), 1);
    assert_eq!(rt.backend(), expected_default_backend());
}

#[spargio::test(shards = 3)]
async fn shards_sets_the_shard_count() {
    assert_eq!(current().shard_count(), 3);
    // The body runs on shard 0, so tasks pinned elsewhere are on other threads.
    let here = std::thread::current().id();
    let there = current()
        .spawn_pinned(2, async { std::thread::current().id() })
        .unwrap()
        .await
        .unwrap();
    assert_ne!(here, there);
}

#[spargio::test(backend = "queue", shards = 2)]
async fn backend_queue_selects_the_queue_backend() {
    assert_eq!(current().backend(), Backend::Queue);
    assert_eq!(current().shard_count(), 2);
}

#[spargio::test(backend = "io_uring", fallback = true)]
async fn backend_io_uring_with_fallback() {
    assert_eq!(current().backend(), expected_default_backend());
}

#[spargio::test]
async fn a_test_may_return_a_result_and_use_question_mark() -> io::Result<()> {
    let dir = std::env::temp_dir().join(format!("spargio-macros-{}", std::process::id()));
    spargio::fs::create_dir_all(&dir).await?;
    let path = dir.join("file");
    spargio::fs::write(&path, b"through the ring".to_vec()).await?;
    let back = spargio::fs::read(&path).await?;
    spargio::fs::remove_file(&path).await?;
    spargio::fs::remove_dir(&dir).await?;
    assert_eq!(back, b"through the ring");
    Ok(())
}

#[spargio::test]
async fn early_return_in_the_body() -> Result<(), String> {
    if current().shard_count() == 1 {
        return Ok(());
    }
    Err("unreachable: one shard".into())
}

#[spargio::test]
async fn the_body_need_not_be_send() {
    let shared = Rc::new(5);
    let other = Rc::clone(&shared);
    let joined = spargio::spawn(async { 2 }).await.unwrap();
    assert_eq!(*other + joined, 7);
    assert_eq!(Rc::strong_count(&shared), 2);
}

#[spargio::test]
#[should_panic(expected = "panicked inside the body")]
async fn a_panic_in_the_body_fails_the_test() {
    spargio::spawn(async {}).await.unwrap();
    panic!("panicked inside the body");
}

// `#[spargio::main]` on a function not named `main`, so this test binary can
// call it: the expansion is the same.
#[spargio::main(shards = 2)]
async fn main_with_a_result() -> io::Result<usize> {
    let task = spargio::spawn(async { current().shard_count() });
    Ok(task.await?)
}

#[spargio::main(shards = 1, backend = "queue")]
async fn main_with_unit() {
    assert_eq!(current().backend(), Backend::Queue);
}

#[test]
fn main_returns_the_body_value() {
    assert_eq!(main_with_a_result().unwrap(), 2);
    main_with_unit();
    // Each call builds and shuts down its own runtime.
    assert!(RuntimeHandle::current().is_none());
}

#[test]
fn a_runtime_that_cannot_start_panics_with_the_reason() {
    let builder = spargio::RuntimeBuilder::new().shards(0);
    let panic = std::panic::catch_unwind(|| {
        spargio::__private::block_on_attribute(builder, "#[spargio::main]", || async {})
    })
    .unwrap_err();
    let msg = panic.downcast_ref::<String>().expect("a formatted panic message");
    assert!(
        msg.starts_with("#[spargio::main]: the spargio runtime could not start:") && msg.contains("shards"),
        "{msg}"
    );
}

#[spargio::test(shards = 1)]
async fn nesting_the_attribute_inside_a_shard_panics() {
    let nested = spargio::spawn(async { main_with_unit() }).await.unwrap_err();
    let msg = nested.panic_message().unwrap_or_default().to_string();
    assert!(msg.contains("called from inside a spargio shard"), "{msg}");
}

// `crate = "..."` names the spargio crate when it is renamed.
extern crate spargio as renamed_spargio;

#[renamed_spargio::test(crate = "::renamed_spargio", shards = 2)]
async fn crate_argument_finds_a_renamed_crate() {
    assert_eq!(current().shard_count(), 2);
}

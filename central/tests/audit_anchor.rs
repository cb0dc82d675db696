//! The audit chain's anchor against the attacks that passed `audit verify`
//! before it: deleting the newest entries, and rewriting the whole chain
//! with fresh hashes. The database is edited directly, as an attacker with
//! access to it would; `nap-central audit verify` is the real command.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nap_central::store::Storage as _;
use nap_central::store::anchor::{Anchor, AnchorBreak};
use nap_central::store::sqlite::SqliteStore;
use nap_core::WallTime;

fn verify(db: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nap-central"))
        .arg("--db")
        .arg(format!("sqlite:{}", db.display()))
        .args(["audit", "verify"])
        .current_dir(db.parent().expect("dir"))
        .output()
        .expect("nap-central runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn append(store: &SqliteStore, n: u64, who: &str) {
    for i in 0..n {
        store
            .append_audit(
                who,
                "command.submit",
                &format!("req-{i}"),
                serde_json::json!({ "i": i }),
                WallTime::UNIX_EPOCH,
            )
            .await
            .expect("append");
    }
}

#[tokio::test]
async fn cutting_or_rewriting_the_chain_fails_verification_once_it_is_anchored() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("central.db");
    let store = SqliteStore::open(&db).expect("open");
    store.migrate().await.expect("migrate");
    append(&store, 5, "alice").await;
    // What central's anchor task does: checkpoint the head beside the database.
    let anchor = Anchor::open(&dir.path().join("central.db.anchor")).expect("anchor");
    let head = store.list_audit(1).await.expect("head").remove(0);
    anchor
        .checkpoint(&head, WallTime::UNIX_EPOCH)
        .expect("checkpoint");
    let (ok, said) = verify(&db);
    assert!(ok, "{said}");
    assert!(said.contains("1 checkpoints"), "{said}");
    drop(store);

    // Delete the newest two entries: the links that remain are intact.
    let conn = rusqlite::Connection::open(&db).expect("sqlite");
    conn.execute("DELETE FROM audit WHERE seq > 3", [])
        .expect("delete");
    drop(conn);
    let (ok, said) = verify(&db);
    assert!(!ok, "a truncated chain must fail: {said}");
    assert!(said.contains("cut") && said.contains("entry 5"), "{said}");

    // Rewrite the whole chain with fresh, consistent hashes.
    let conn = rusqlite::Connection::open(&db).expect("sqlite");
    conn.execute("DELETE FROM audit", []).expect("delete");
    drop(conn);
    let store = SqliteStore::open(&db).expect("open");
    append(&store, 5, "mallory").await;
    let (ok, said) = verify(&db);
    assert!(!ok, "a rewritten chain must fail: {said}");
    assert!(said.contains("entry 5 was rewritten"), "{said}");
}

#[tokio::test]
async fn a_forged_checkpoint_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::memory().expect("open");
    store.migrate().await.expect("migrate");
    append(&store, 3, "alice").await;
    let entries = store.all_audit().await.expect("all");
    let path = dir.path().join("anchor");
    let anchor = Anchor::open(&path).expect("anchor");
    anchor
        .checkpoint(&entries[2], WallTime::UNIX_EPOCH)
        .expect("checkpoint");
    assert_eq!(anchor.verify(&entries), Ok(1));
    // An attacker who can write the file but not read the key.
    let text = std::fs::read_to_string(&path).expect("read");
    let forged = text.replace(&entries[2].hash, &"0".repeat(64));
    std::fs::write(&path, forged).expect("write");
    assert!(matches!(
        anchor.verify(&entries),
        Err(AnchorBreak::BadSignature { line: 1, seq: 3 })
    ));
    std::fs::write(&path, "not json\n").expect("write");
    assert!(matches!(
        anchor.verify(&entries),
        Err(AnchorBreak::Unreadable { line: 1, .. })
    ));
}

#[tokio::test]
async fn central_checkpoints_the_head_as_sessions_open_and_close() {
    let anchor_dir = tempfile::tempdir().expect("dir");
    let path = anchor_dir.path().join("audit.anchor");
    let central = common::central("anchor_running", |c| {
        c.audit_anchor = Some(path.clone());
        c.audit_anchor_every_ms = 20;
    })
    .await;
    let mut events = central.events();
    let (_key, ws) = common::connected_node(&central).await;
    drop(ws);
    // The session's opening and closing are audited (one record per state
    // batch) and the head that holds them is anchored.
    let store = &central.running.hub.effects().store;
    loop {
        let seq = match common::wait_for(&mut events, Duration::from_secs(30), |e| {
            matches!(e, nap_central::AppEvent::AuditAnchored { .. })
        })
        .await
        {
            nap_central::AppEvent::AuditAnchored { seq } => seq,
            _ => unreachable!(),
        };
        let entries = store.all_audit().await.expect("audit");
        let upto: Vec<_> = entries.iter().filter(|e| e.seq <= seq).collect();
        let closed = upto.iter().any(|e| {
            e.action == "state.batch"
                && e.detail["sessions"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["status"] == "offline"))
        });
        if closed {
            let anchor = Anchor::open(&path).expect("anchor");
            assert!(anchor.verify(&entries).expect("agrees") >= 1);
            break;
        }
    }
}

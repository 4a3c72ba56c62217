//! The audit trail's contract (issue 35), run against both backends: every write records
//! its events with the calling task's origin, in the write's own transaction; a refused
//! write records nothing; reading pages backwards and follows forwards by id, filtered;
//! the retention by count is enforced.

use std::sync::Arc;

use super::audit::{self, EventQuery, Origin, Retention};
use super::sqlite::Sqlite;
use super::{Conflict, RedirRow, Store, StoreError, TokenRecord};
use crate::wire::{Actor, Application, AuditEvent, EventKind, Instance, Organisation, Protocol, TokenInfo};

#[cfg(feature = "etcd")]
use super::contract::harness;

fn origin() -> Origin {
    Origin {
        actor: Actor { id: Some("tok_robot".into()), name: "robot".into() },
        client: Some("192.0.2.7".into()),
        node: Some("gw-a".into()),
    }
}

fn app(id: &str, org: &str) -> Application {
    Application {
        id: id.into(),
        name: id.into(),
        owner_id: org.into(),
        instances: vec![Instance { address: "127.0.0.1:9".into(), ..Instance::default() }],
        health_check: Default::default(),
    }
}

fn redir(app: &str, namespace: &str, port: u16) -> RedirRow {
    RedirRow {
        namespace: namespace.into(),
        port,
        ports: 1,
        protocol: Protocol::Tcp,
        app_id: app.into(),
        settings: Default::default(),
        revision: 0,
    }
}

fn all(org: Option<&str>) -> EventQuery {
    EventQuery { org_id: org.map(str::to_owned), after: Some(0), limit: 1000, ..EventQuery::default() }
}

fn kinds(events: &[AuditEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

/// Every kind of write records one event per change it makes, with the origin of the task
/// that wrote and the records before and after; refused writes record nothing.
async fn every_write_records_its_events(store: Arc<dyn Store>) {
    let acme = Organisation { id: "orga_acme".into(), name: "acme".into() };
    let writes = async {
        store.create_org(&acme).await.unwrap();
        assert!(matches!(
            store.create_org(&Organisation { id: "orga_2".into(), name: "acme".into() }).await,
            Err(StoreError::Conflict(Conflict::OrgName))
        ));
        store.create_app(&app("app_1", &acme.id)).await.unwrap();
        store.create_app(&app("app_2", &acme.id)).await.unwrap();
        store.claim(&redir("app_1", "default", 6000), &acme.id, None).await.unwrap();
        // A batch of two, one refused: one event.
        let batch = [redir("app_2", "default", 6000), redir("app_2", "default", 6001)];
        let outcomes = store.claim_many(&batch, &acme.id, None).await.unwrap();
        assert!(outcomes[0].is_err() && outcomes[1].is_ok(), "{outcomes:?}");
        let mut updated = redir("app_1", "default", 6000);
        updated.settings.idle_timeout = Some(600);
        store.update_redir(&updated).await.unwrap();
        store.release(&updated, &acme.id).await.unwrap();
        store.set_instances("app_1", &[]).await.unwrap();
        store.remove_app("app_2").await.unwrap();
        let token = TokenRecord {
            info: TokenInfo {
                id: "tok_1".into(),
                name: "ci".into(),
                owner_id: Some(acme.id.clone()),
                created_at: None,
            },
            token_hash: "ab".repeat(32),
            secret_hash: "cd".repeat(32),
        };
        store.put_token(&token).await.unwrap();
        store.revoke_token(Some(&acme.id), "tok_1").await.unwrap();
        assert!(matches!(
            store.revoke_token(Some(&acme.id), "tok_1").await,
            Err(StoreError::Conflict(Conflict::NotFound))
        ));
    };
    audit::acting(origin(), writes).await;
    // Outside any origin: the server itself.
    store.create_app(&app("app_3", &acme.id)).await.unwrap();

    let events = store.events(&all(Some(&acme.id))).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            "organisation.created",
            "application.created",
            "application.created",
            "redirection.added",
            "redirection.added",
            "redirection.updated",
            "redirection.removed",
            "application.instances",
            "redirection.removed",
            "application.removed",
            "token.issued",
            "token.revoked",
            "application.created",
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "ids grow: {events:?}");
    let robot = origin();
    for event in &events[..12] {
        assert_eq!((&event.actor, &event.client, &event.node), (&robot.actor, &robot.client, &robot.node));
        assert_eq!(event.org_id.as_deref(), Some("orga_acme"));
    }
    assert_eq!(events[12].actor.name, "server");
    assert_eq!(events[12].actor.id, None);
    let update = &events[5];
    assert_eq!(update.app_id.as_deref(), Some("app_1"));
    assert_eq!(update.before.as_ref().unwrap()["port"], 6000);
    assert!(update.before.as_ref().unwrap().get("idleTimeout").is_none(), "{update:?}");
    assert_eq!(update.after.as_ref().unwrap()["idleTimeout"], 600);
    assert!(events[0].before.is_none() && events[0].after.is_some());
    assert!(events[9].before.is_some() && events[9].after.is_none());
    let revoked = &events[11];
    assert_eq!(revoked.before.as_ref().unwrap()["name"], "ci");
    assert!(!format!("{revoked:?}").contains(&"cd".repeat(32)), "no hash in the trail");

    // Backwards, newest first, in pages: the same events, each once.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let query = EventQuery { org_id: Some(acme.id.clone()), before, limit: 5, ..EventQuery::default() };
        let page = store.events(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        paged.extend(page);
    }
    paged.reverse();
    assert_eq!(paged, events);
    // Filters: kind, application, after a cursor.
    let query = EventQuery {
        kinds: vec![EventKind::RedirectionAdded, EventKind::RedirectionRemoved],
        app_id: Some("app_2".into()),
        ..all(None)
    };
    assert_eq!(kinds(&store.events(&query).await.unwrap()), ["redirection.added", "redirection.removed"]);
    let after = EventQuery { after: Some(events[10].id), ..all(Some(&acme.id)) };
    assert_eq!(store.events(&after).await.unwrap(), events[11..].to_vec());
    let other = store.events(&all(Some("orga_other"))).await.unwrap();
    assert!(other.is_empty(), "{other:?}");
}

#[tokio::test]
async fn sqlite_every_write_records_its_events() {
    let dir = tempfile::tempdir().unwrap();
    every_write_records_its_events(Arc::new(Sqlite::open(&dir.path().join("t.db")).unwrap())).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_every_write_records_its_events() {
    let server = tokio::task::spawn_blocking(harness::Etcd::start).await.unwrap();
    let store = super::etcd::Etcd::connect(&server.url(), &Default::default()).await.unwrap();
    every_write_records_its_events(Arc::new(store)).await;
}

/// Creates `n` applications of `org`: `n` events.
async fn changes(store: &dyn Store, org: &str, n: usize) {
    for i in 0..n {
        store.create_app(&app(&format!("app_{i}"), org)).await.unwrap();
    }
}

/// SQLite keeps at most the retention's count, the newest, from the write that passes it.
#[tokio::test]
async fn sqlite_the_retention_keeps_the_newest_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("t.db")).unwrap();
    store.set_retention(Retention { max_count: 3, ..Retention::default() });
    store.create_org(&Organisation { id: "orga_1".into(), name: "a".into() }).await.unwrap();
    changes(&store, "orga_1", 6).await;
    let kept = store.events(&all(None)).await.unwrap();
    let names: Vec<_> = kept.iter().map(|e| e.app_id.clone().unwrap()).collect();
    assert_eq!(names, ["app_3", "app_4", "app_5"]);
}

/// etcd's sweep deletes the oldest events beyond the count, and the snapshot never
/// carries the trail.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_the_sweep_keeps_the_newest_count() {
    let server = tokio::task::spawn_blocking(harness::Etcd::start).await.unwrap();
    let store = super::etcd::Etcd::connect(&server.url(), &Default::default()).await.unwrap();
    store.set_retention(Retention { max_count: 3, ..Retention::default() });
    store.create_org(&Organisation { id: "orga_1".into(), name: "a".into() }).await.unwrap();
    changes(&store, "orga_1", 6).await;
    assert_eq!(store.events(&all(None)).await.unwrap().len(), 7);
    store.sweep_events().await.unwrap();
    let kept = store.events(&all(None)).await.unwrap();
    let names: Vec<_> = kept.iter().map(|e| e.app_id.clone().unwrap()).collect();
    assert_eq!(names, ["app_3", "app_4", "app_5"]);
    let snapshot = store.snapshot_in_pages(2).await.unwrap();
    assert_eq!(snapshot.records.len(), 7, "the org and six applications: {:?}", snapshot.records);
}

/// etcd indexes each event once its change has committed (the inbox's move): a read gives
/// the same events, with the same ids and in the same order, before and after the move
/// and with part of the trail moved, whether paged backwards or followed; the keys of the
/// trail's first layout are ignored, and swept.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_reads_agree_across_the_inbox_move() {
    let server = tokio::task::spawn_blocking(harness::Etcd::start).await.unwrap();
    let store = super::etcd::Etcd::connect(&server.url(), &Default::default()).await.unwrap();
    store.create_org(&Organisation { id: "orga_1".into(), name: "a".into() }).await.unwrap();
    changes(&store, "orga_1", 10).await;
    let unmoved = store.events(&all(Some("orga_1"))).await.unwrap();
    assert_eq!(unmoved.len(), 11);
    store.move_inbox().await.unwrap();
    assert_eq!(store.events(&all(Some("orga_1"))).await.unwrap(), unmoved);
    // Ten more, unmoved, after the moved ones; and one left by the first layout.
    for i in 10..20 {
        store.create_app(&app(&format!("app_{i}"), "orga_1")).await.unwrap();
    }
    let stale = serde_json::to_string(&unmoved[1]).unwrap();
    store.put_raw("events/1765000000000-abc-0000", &stale).await.unwrap();
    let mixed = store.events(&all(Some("orga_1"))).await.unwrap();
    assert_eq!(mixed.len(), 21);
    assert_eq!(mixed[..11], unmoved[..]);
    assert!(mixed.windows(2).all(|w| w[0].id < w[1].id), "{mixed:?}");
    for org in [Some("orga_1"), None] {
        // Backwards, three at a time: each event once, newest first.
        let mut paged = Vec::new();
        let mut before = None;
        for _ in 0..20 {
            let query =
                EventQuery { org_id: org.map(str::to_owned), before, limit: 3, ..EventQuery::default() };
            let page = store.events(&query).await.unwrap();
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            paged.extend(page);
        }
        paged.reverse();
        assert_eq!(paged, mixed, "{org:?}");
        // Forwards, four at a time.
        let mut followed = Vec::new();
        let mut after = 0;
        for _ in 0..20 {
            let query = EventQuery { after: Some(after), limit: 4, ..all(org) };
            let page = store.events(&query).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.id;
            followed.extend(page);
        }
        assert_eq!(followed, mixed, "{org:?}");
    }
    store.sweep_events().await.unwrap();
    assert_eq!(store.events(&all(None)).await.unwrap(), mixed);
    assert!(!store.exists("events/1765000000000-abc-0000").await.unwrap());
}

/// One page of `org`'s events on `store`, and how many keys etcd returned for it.
#[cfg(feature = "etcd")]
async fn read(
    store: &super::etcd::Etcd,
    org: &str,
    after: Option<i64>,
    limit: usize,
) -> (Vec<AuditEvent>, u64) {
    let query = EventQuery { org_id: Some(org.into()), after, limit, ..EventQuery::default() };
    let keys = store.event_keys_read();
    let started = std::time::Instant::now();
    let page = store.events(&query).await.unwrap();
    let (keys, took) = (store.event_keys_read() - keys, started.elapsed());
    eprintln!("{org} after={after:?} limit={limit}: {} events, {keys} keys read, {took:?}", page.len());
    (page, keys)
}

/// On etcd, reading an organisation's page touches the keys it returns, not the trail:
/// 20,000 events of one organisation and 20 of another, interleaved; each read of a page
/// (newest first, and following from the start) counts the keys etcd returned.
/// `cargo test --all-features --lib etcd_a_rare_organisations_page_reads_its_own_keys -- --nocapture`
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_a_rare_organisations_page_reads_its_own_keys() {
    let server = tokio::task::spawn_blocking(harness::Etcd::start).await.unwrap();
    let store = super::etcd::Etcd::connect(&server.url(), &Default::default()).await.unwrap();
    let written = std::time::Instant::now();
    for _ in 0..20 {
        store.record_in_bulk("orga_busy", 1000).await.unwrap();
        store.record_in_bulk("orga_rare", 1).await.unwrap();
    }
    store.move_inbox().await.unwrap();
    eprintln!("20,020 events written and indexed in {:?}", written.elapsed());
    let (page, keys) = read(&store, "orga_rare", None, 100).await;
    assert_eq!(page.len(), 20);
    assert!(keys <= 20, "{keys} keys read for 20 events");
    let (page, keys) = read(&store, "orga_rare", Some(0), 100).await;
    assert_eq!(page.len(), 20);
    assert!(keys <= 20, "{keys} keys read for 20 events");
    let (page, keys) = read(&store, "orga_busy", None, 100).await;
    assert_eq!(page.len(), 100);
    assert!(keys <= 800, "{keys} keys read for 100 events");
    let (page, keys) = read(&store, "orga_busy", Some(0), 100).await;
    assert_eq!(page.len(), 100);
    assert!(keys <= 160, "{keys} keys read for 100 events");
}

//! The store contract, run against both backends: SQLite in a temporary directory, and a
//! real etcd started for the test (Debian's `etcd-server`, as `.ci/run` installs it).

use std::collections::HashSet;
use std::sync::Arc;

use super::sqlite::Sqlite;
use super::{Conflict, NodeRecord, Record, RedirKey, RedirRow, Revision, Store, StoreError, TokenRecord};
use crate::server::state::table::Table;
use crate::wire::{Application, CheckKind, HealthCheck, Instance, Organisation, Protocol, TokenInfo};

#[cfg(feature = "etcd")]
#[path = "../../../../tests/common/etcd.rs"]
pub(super) mod harness;

fn org(name: &str) -> Organisation {
    Organisation { id: format!("orga_{name}"), name: name.into() }
}

fn app(id: &str, org: &Organisation) -> Application {
    Application {
        id: id.into(),
        name: id.into(),
        owner_id: org.id.clone(),
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

fn udp(app: &str, namespace: &str, port: u16) -> RedirRow {
    RedirRow { protocol: Protocol::Udp, ..redir(app, namespace, port) }
}

fn conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Conflict {
    match result {
        Err(StoreError::Conflict(c)) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Claims, conflicts, quota, release and the previous port.
async fn claims_and_releases(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    assert_eq!(
        conflict(store.create_org(&Organisation { id: "orga_x".into(), ..acme.clone() }).await),
        Conflict::OrgName
    );
    store.create_app(&app("app_1", &acme)).await.unwrap();
    store.create_app(&app("app_2", &acme)).await.unwrap();
    assert_eq!(
        conflict(store.create_app(&Application { id: "app_3".into(), ..app("app_1", &acme) }).await),
        Conflict::AppName
    );

    let first = store.claim(&redir("app_1", "default", 6000), &acme.id, Some(2)).await.unwrap();
    assert_eq!(
        conflict(store.claim(&redir("app_2", "default", 6000), &acme.id, Some(2)).await),
        Conflict::PortTaken
    );
    assert_eq!(
        conflict(store.claim(&redir("app_1", "default", 6001), &acme.id, Some(2)).await),
        Conflict::AppHasOne(6000)
    );
    let second = store.claim(&redir("app_1", "cleverapps", 6000), &acme.id, Some(2)).await.unwrap();
    assert!(second > first, "revisions grow: {first} then {second}");
    assert_eq!(
        conflict(store.claim(&redir("app_2", "default", 6002), &acme.id, Some(2)).await),
        Conflict::Quota(2)
    );
    assert_eq!(
        conflict(store.claim(&redir("app_9", "default", 6003), &acme.id, None).await),
        Conflict::NotFound
    );

    store.release(&redir("app_1", "default", 6000), &acme.id).await.unwrap();
    assert_eq!(store.previous_port("app_1", "default", Protocol::Tcp).await.unwrap(), Some(6000));
    assert_eq!(conflict(store.release(&redir("app_1", "default", 6000), &acme.id).await), Conflict::NotFound);
    assert_eq!(
        conflict(store.release(&redir("app_2", "cleverapps", 6000), &acme.id).await),
        Conflict::NotFound
    );
    // The quota counts what is held now: the release made room.
    store.claim(&redir("app_2", "default", 6002), &acme.id, Some(2)).await.unwrap();

    store.remove_app("app_1").await.unwrap();
    assert_eq!(conflict(store.remove_app("app_1").await), Conflict::NotFound);
    let table = Table::load(store.snapshot().await.unwrap());
    let ports: Vec<_> = table.redirs.keys().collect();
    assert_eq!(
        ports,
        vec![RedirKey::new("default", Protocol::Tcp, 6002)],
        "app_1's redirections went with it"
    );
    // app_1's name is free again.
    store.create_app(&app("app_1", &acme)).await.unwrap();
}

/// An update replaces a redirection's settings and nothing else: same port, protocol and
/// application, the quota untouched, the watch carrying it as a put; only the application
/// that holds the port may update it, and a released one is gone.
async fn an_update_changes_the_settings_in_place(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    store.create_app(&app("app_1", &acme)).await.unwrap();
    store.create_app(&app("app_2", &acme)).await.unwrap();
    let claimed = store.claim(&redir("app_1", "default", 6100), &acme.id, Some(2)).await.unwrap();
    store.claim(&udp("app_1", "default", 6100), &acme.id, Some(2)).await.unwrap();
    let mut changes = store.watch(claimed).await.unwrap();
    let settings = crate::wire::RedirSettings {
        idle_timeout: Some(600),
        max_connections: Some(3),
        allow: vec!["10.0.0.0/8".into()],
        proxy_protocol: Some(crate::wire::ProxyProtocol::V2),
        ..Default::default()
    };
    let updated = RedirRow { settings: settings.clone().into(), ..redir("app_1", "default", 6100) };
    let revision = store.update_redir(&updated).await.unwrap();
    assert!(revision > claimed);
    let table = Table::load(store.snapshot().await.unwrap());
    let row = &table.redirs[&RedirKey::new("default", Protocol::Tcp, 6100)];
    assert_eq!((row.app_id.as_ref(), &*row.settings), ("app_1", &settings));
    assert_eq!(table.redirs[&RedirKey::new("default", Protocol::Udp, 6100)].settings, Default::default());
    // The watch carries it as a put of the whole row.
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &super::Event| e.revision == revision) {
        seen.extend(changes.recv().await.unwrap().unwrap());
    }
    let put = seen.iter().find(|e| e.revision == revision).unwrap();
    assert!(matches!(&put.change, super::Change::Put(Record::Redir(r)) if *r.settings == settings));
    // Back to nothing set: the namespace's defaults.
    store.update_redir(&redir("app_1", "default", 6100)).await.unwrap();
    let table = Table::load(store.snapshot().await.unwrap());
    assert_eq!(table.redirs[&RedirKey::new("default", Protocol::Tcp, 6100)].settings, Default::default());
    // Another application's port, a port nobody holds: not found, nothing changed.
    assert_eq!(conflict(store.update_redir(&redir("app_2", "default", 6100)).await), Conflict::NotFound);
    assert_eq!(conflict(store.update_redir(&redir("app_1", "default", 6101)).await), Conflict::NotFound);
    // The quota still counts two (updates took none).
    assert_eq!(
        conflict(store.claim(&redir("app_2", "default", 6102), &acme.id, Some(2)).await),
        Conflict::Quota(2)
    );
    store.release(&redir("app_1", "default", 6100), &acme.id).await.unwrap();
    assert_eq!(conflict(store.update_redir(&updated).await), Conflict::NotFound);
}

#[tokio::test]
async fn sqlite_an_update_changes_the_settings_in_place() {
    let (store, _dir) = sqlite();
    an_update_changes_the_settings_in_place(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_an_update_changes_the_settings_in_place() {
    let (store, _etcd) = etcd().await;
    an_update_changes_the_settings_in_place(store).await;
}

/// An application's health-check settings are stored with it: given at creation, replaced
/// whole (instances untouched), cleared, carried by the watch as a put of the application,
/// read back by a snapshot; a gone application is not found.
async fn health_checks_are_stored_with_the_application(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    let own = HealthCheck {
        kind: Some(CheckKind::Expect),
        interval_ms: Some(1000),
        timeout_ms: Some(500),
        rise: Some(1),
        fall: Some(2),
        send: Some("50494e470d0a".into()),
        expect: Some("2b504f4e47".into()),
    };
    store.create_app(&Application { health_check: own.clone(), ..app("app_1", &acme) }).await.unwrap();
    store.create_app(&app("app_2", &acme)).await.unwrap();
    let find = |snapshot: super::Snapshot, id: &str| {
        snapshot
            .records
            .into_iter()
            .find_map(|r| match r {
                Record::App(a) if a.id == id => Some(a),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {id} in the snapshot"))
    };
    assert_eq!(find(store.snapshot().await.unwrap(), "app_1").health_check, own);
    assert!(find(store.snapshot().await.unwrap(), "app_2").health_check.is_default());

    let mut changes = store.watch(store.snapshot().await.unwrap().revision).await.unwrap();
    let other = HealthCheck { interval_ms: Some(250), timeout_ms: Some(250), ..HealthCheck::default() };
    let revision = store.set_health_check("app_2", &other).await.unwrap();
    let batch = tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv())
        .await
        .expect("the watch delivers within 10 s")
        .expect("the watch is open")
        .expect("a batch of changes");
    assert!(
        batch.iter().any(|e| e.revision == revision
            && matches!(&e.change, super::Change::Put(Record::App(a)) if a.id == "app_2" && a.health_check == other)),
        "{batch:?}"
    );
    let stored = find(store.snapshot().await.unwrap(), "app_2");
    assert_eq!(stored.health_check, other);
    assert_eq!(stored.instances, app("app_2", &acme).instances, "the instances stay");
    store.set_health_check("app_1", &HealthCheck::default()).await.unwrap();
    assert!(find(store.snapshot().await.unwrap(), "app_1").health_check.is_default());
    assert_eq!(conflict(store.set_health_check("app_9", &other).await), Conflict::NotFound);
}

#[tokio::test]
async fn sqlite_health_checks_are_stored_with_the_application() {
    let (store, _dir) = sqlite();
    health_checks_are_stored_with_the_application(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_health_checks_are_stored_with_the_application() {
    let (store, _etcd) = etcd().await;
    health_checks_are_stored_with_the_application(store).await;
}

/// TCP and UDP ports are separate spaces: the same port of a namespace in each, one
/// redirection of each protocol per application and namespace, a previous port per
/// protocol, one quota for both, and an application's removal takes both.
async fn udp_ports_are_a_space_of_their_own(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    store.create_app(&app("app_1", &acme)).await.unwrap();
    store.create_app(&app("app_2", &acme)).await.unwrap();
    let mut table = Table::load(store.snapshot().await.unwrap());
    let mut changes = store.watch(table.revision).await.unwrap();

    store.claim(&redir("app_1", "default", 7000), &acme.id, Some(3)).await.unwrap();
    store.claim(&udp("app_2", "default", 7000), &acme.id, Some(3)).await.unwrap();
    assert_eq!(
        conflict(store.claim(&udp("app_1", "default", 7000), &acme.id, Some(3)).await),
        Conflict::PortTaken
    );
    store.claim(&udp("app_1", "default", 7001), &acme.id, Some(3)).await.unwrap();
    assert_eq!(
        conflict(store.claim(&udp("app_1", "default", 7002), &acme.id, None).await),
        Conflict::AppHasOne(7001),
        "one UDP redirection per application and namespace"
    );
    assert_eq!(
        conflict(store.claim(&udp("app_2", "other", 7003), &acme.id, Some(3)).await),
        Conflict::Quota(3),
        "the quota counts TCP and UDP alike"
    );
    let rows = [udp("app_2", "other", 7004), redir("app_2", "default", 7000)];
    let outcomes = store.claim_many(&rows, &acme.id, None).await.unwrap();
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert_eq!(conflict(outcomes.into_iter().nth(1).unwrap()), Conflict::PortTaken);

    store.release(&udp("app_1", "default", 7001), &acme.id).await.unwrap();
    assert_eq!(store.previous_port("app_1", "default", Protocol::Udp).await.unwrap(), Some(7001));
    assert_eq!(store.previous_port("app_1", "default", Protocol::Tcp).await.unwrap(), None);
    let asked = [
        ("app_1".to_owned(), "default".to_owned(), Protocol::Udp),
        ("app_1".to_owned(), "default".to_owned(), Protocol::Tcp),
    ];
    assert_eq!(store.previous_ports(&asked).await.unwrap(), vec![Some(7001), None]);
    assert_eq!(
        conflict(store.release(&redir("app_2", "default", 7000), &acme.id).await),
        Conflict::NotFound,
        "app_2 holds UDP 7000, not TCP 7000"
    );

    let snapshot = Table::load(store.snapshot().await.unwrap());
    let keys: Vec<_> = snapshot.redirs.keys().collect();
    assert_eq!(
        keys,
        vec![
            RedirKey::new("default", Protocol::Tcp, 7000),
            RedirKey::new("default", Protocol::Udp, 7000),
            RedirKey::new("other", Protocol::Udp, 7004),
        ]
    );
    assert_eq!(&*snapshot.redirs[&keys[1]].app_id, "app_2");
    // The watch carried every change, protocol included.
    while table.revision < snapshot.revision {
        let events = changes.recv().await.expect("the watch goes on").unwrap();
        table.apply(&events);
    }
    assert_eq!(table.redirs, snapshot.redirs);

    store.remove_app("app_2").await.unwrap();
    let table = Table::load(store.snapshot().await.unwrap());
    let keys: Vec<_> = table.redirs.keys().collect();
    assert_eq!(
        keys,
        vec![RedirKey::new("default", Protocol::Tcp, 7000)],
        "app_2's UDP redirections went with it"
    );
    assert_eq!(store.previous_port("app_2", "other", Protocol::Udp).await.unwrap(), None);
}

/// A table loaded at a revision and moved forward by the watch equals a fresh snapshot.
async fn the_watch_replays_every_change_in_order(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    let mut table = Table::load(store.snapshot().await.unwrap());
    let mut changes = store.watch(table.revision).await.unwrap();
    store.create_app(&app("app_1", &acme)).await.unwrap();
    store.create_app(&app("app_2", &acme)).await.unwrap();
    store.claim(&redir("app_1", "default", 6100), &acme.id, None).await.unwrap();
    store.claim(&redir("app_2", "default", 6101), &acme.id, None).await.unwrap();
    store.release(&redir("app_1", "default", 6100), &acme.id).await.unwrap();
    store
        .set_instances("app_2", &[Instance { address: "127.0.0.1:10".into(), ..Instance::default() }])
        .await
        .unwrap();
    let info = TokenInfo {
        id: "tok_1".into(),
        name: "ci".into(),
        owner_id: Some(acme.id.clone()),
        created_at: Some(1),
    };
    let token = TokenRecord { info, token_hash: "ab".repeat(32), secret_hash: "cd".repeat(32) };
    let last_write = store.put_token(&token).await.unwrap();
    assert_eq!(conflict(store.revoke_token(Some("orga_other"), "tok_1").await), Conflict::NotFound);

    let mut last = table.revision;
    while table.revision < last_write {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv())
            .await
            .expect("the watch delivers within 10 s")
            .expect("the watch is open")
            .expect("a batch of changes");
        for event in &batch {
            assert!(event.revision >= last, "changes come in revision order");
            last = event.revision;
        }
        table.apply(&batch);
        // Applying a batch twice changes nothing.
        let again = table.clone();
        table.apply(&batch);
        assert_eq!(format!("{:?}", again.redirs), format!("{:?}", table.redirs));
    }
    let fresh = Table::load(store.snapshot().await.unwrap());
    assert_eq!(table.redirs.keys().collect::<Vec<_>>(), fresh.redirs.keys().collect::<Vec<_>>());
    assert_eq!(table.apps, fresh.apps);
    assert_eq!(table.orgs, fresh.orgs);
    assert_eq!(table.tokens, fresh.tokens);
    assert_eq!(&*table.apps["app_2"].instances[0].address, "127.0.0.1:10");
    assert_eq!(table.tokens_by_hash(&"ab".repeat(32)).count(), 1);
}

/// Many claims at once on few ports: never two on one port, never two for one application.
async fn concurrent_claims_never_share_a_port(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    for i in 0..12 {
        store.create_app(&app(&format!("app_{i}"), &acme)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..48u16 {
        let (store, org_id) = (store.clone(), acme.id.clone());
        tasks.push(tokio::spawn(async move {
            let row = redir(&format!("app_{}", i % 12), "default", 6200 + i % 6);
            store.claim(&row, &org_id, None).await.map(|_| row)
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(row) => won.push(row),
            Err(StoreError::Conflict(Conflict::PortTaken | Conflict::AppHasOne(_))) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    let ports: HashSet<u16> = won.iter().map(|r| r.port).collect();
    let apps: HashSet<&str> = won.iter().map(|r| r.app_id.as_ref()).collect();
    assert_eq!(ports.len(), won.len(), "two claims won one port: {won:?}");
    assert_eq!(apps.len(), won.len(), "one application won two ports: {won:?}");
    assert_eq!(won.len(), 6, "each of the 6 ports was claimed once");
    let table = Table::load(store.snapshot().await.unwrap());
    assert_eq!(table.redirs.len(), 6);
}

/// Many claims at once against a quota: exactly the quota's worth succeed.
async fn concurrent_claims_never_pass_the_quota(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    for i in 0..12 {
        store.create_app(&app(&format!("app_{i}"), &acme)).await.unwrap();
    }
    let tasks: Vec<_> = (0..12u16)
        .map(|i| {
            let (store, org_id) = (store.clone(), acme.id.clone());
            tokio::spawn(async move {
                store.claim(&redir(&format!("app_{i}"), "default", 6300 + i), &org_id, Some(3)).await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict(Conflict::Quota(3))) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!(won, 3, "the quota of 3 held under concurrent claims");
}

/// A batch claims each row as one claim would, in order, and says per row why not.
async fn a_batch_claims_each_row_as_one_claim_would(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    for i in 0..130 {
        store.create_app(&app(&format!("app_{i}"), &acme)).await.unwrap();
    }
    store.claim(&redir("app_0", "default", 7000), &acme.id, None).await.unwrap();
    let mut rows = vec![
        redir("app_1", "default", 7000),    // the port is taken
        redir("app_0", "default", 7001),    // the application has one there
        redir("app_2", "default", 7002),    // made
        redir("app_3", "default", 7002),    // the row before took the port
        redir("app_2", "cleverapps", 7002), // made: another namespace
        redir("app_2", "default", 7003),    // the application got one two rows ago
        redir("app_999", "default", 7004),  // no such application
    ];
    // More rows than one etcd transaction takes.
    rows.extend((4..120).map(|i| redir(&format!("app_{i}"), "default", 7100 + i as u16)));
    let outcomes = store.claim_many(&rows, &acme.id, Some(110)).await.unwrap();
    assert_eq!(outcomes.len(), rows.len());
    let conflicts: Vec<Option<Conflict>> = outcomes
        .iter()
        .map(|o| match o {
            Ok(_) => None,
            Err(StoreError::Conflict(c)) => Some(c.clone()),
            Err(other) => panic!("unexpected: {other}"),
        })
        .collect();
    assert_eq!(
        conflicts[..7],
        [
            Some(Conflict::PortTaken),
            Some(Conflict::AppHasOne(7000)),
            None,
            Some(Conflict::PortTaken),
            None,
            Some(Conflict::AppHasOne(7002)),
            Some(Conflict::NotFound),
        ]
    );
    // The quota of 110, one held before: 2 made above, 107 of the 116 that follow.
    let made_after: Vec<bool> = conflicts[7..].iter().map(Option::is_none).collect();
    assert_eq!(made_after.iter().filter(|m| **m).count(), 107, "{conflicts:?}");
    assert!(made_after[..107].iter().all(|m| *m), "the earlier rows take the quota first: {conflicts:?}");
    assert!(conflicts[7 + 107..].iter().all(|c| *c == Some(Conflict::Quota(110))), "{conflicts:?}");
    let table = Table::load(store.snapshot().await.unwrap());
    assert_eq!(table.redirs.len(), 110);
    for (row, outcome) in rows.iter().zip(&outcomes) {
        if let Ok(revision) = outcome {
            let stored = &table.redirs[&row.key()];
            assert_eq!((&stored.app_id, stored.revision), (&row.app_id, *revision), "{row:?}");
        }
    }
    assert!(store.claim_many(&[], &acme.id, None).await.unwrap().is_empty());
}

/// A table larger than one answer of the store (etcd's gRPC answers stop at 4 MiB by
/// default, and a snapshot reads pages of keys): every row comes back, with its settings.
async fn a_snapshot_of_a_large_table_holds_every_row(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    for i in 0..50 {
        store.create_app(&app(&format!("app_{i}"), &acme)).await.unwrap();
    }
    // 2,500 rows of about 3.5 KiB each: 8 MiB, and more keys than a page holds.
    let allow: Vec<String> = (0..200).map(|j| format!("10.{}.{}.0/24", j / 256, j % 256)).collect();
    let rows: Vec<RedirRow> = (0..2500u16)
        .map(|n| {
            let mut row = redir(&format!("app_{}", n % 50), &format!("ns{}", n / 50), 10000 + n);
            row.settings.allow = allow.clone();
            row
        })
        .collect();
    for chunk in rows.chunks(500) {
        let outcomes = store.claim_many(chunk, &acme.id, None).await.unwrap();
        assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes.iter().find(|o| o.is_err()));
    }
    let table = Table::load(store.snapshot().await.unwrap());
    assert_eq!(table.redirs.len(), rows.len());
    assert_eq!(table.apps.len(), 50);
    for row in &rows {
        let stored = &table.redirs[&row.key()];
        assert_eq!((&stored.app_id, &stored.settings), (&row.app_id, &row.settings));
    }
}

/// `app`'s range of `n` TCP ports from `first` (issue 34).
fn range(app: &str, first: u16, n: u16) -> RedirRow {
    RedirRow { ports: n, ..redir(app, "default", first) }
}

/// Issue 34: a range is claimed whole or not at all, never over another redirection (a
/// single port in it, or another range), and a single port inside it is refused; it comes
/// back whole from a snapshot and the watch, is released whole (every port quarantined),
/// and its application takes it back at once, which lifts every port's quarantine.
async fn a_range_is_claimed_whole_or_not_at_all(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    for id in ["app_1", "app_2", "app_3", "app_4", "app_5"] {
        store.create_app(&app(id, &acme)).await.unwrap();
    }
    let start = store.claim(&redir("app_1", "default", 6010), &acme.id, None).await.unwrap();
    let mut changes = store.watch(start).await.unwrap();
    assert_eq!(
        conflict(store.claim(&range("app_2", 6000, 20), &acme.id, None).await),
        Conflict::RangeTaken(6010)
    );
    let table = Table::load(store.snapshot().await.unwrap());
    assert_eq!(
        table.redirs.len(),
        1,
        "nothing of the refused range was claimed: {:?}",
        table.redirs.keys().collect::<Vec<_>>()
    );
    let claimed = store.claim(&range("app_2", 6011, 20), &acme.id, None).await.unwrap();
    // A single port inside it, a range over its end or its start, are refused.
    assert_eq!(
        conflict(store.claim(&redir("app_3", "default", 6020), &acme.id, None).await),
        Conflict::PortTaken
    );
    assert_eq!(
        conflict(store.claim(&redir("app_3", "default", 6030), &acme.id, None).await),
        Conflict::PortTaken
    );
    assert_eq!(
        conflict(store.claim(&range("app_4", 6030, 5), &acme.id, None).await),
        Conflict::RangeTaken(6030)
    );
    assert_eq!(
        conflict(store.claim(&range("app_4", 6005, 10), &acme.id, None).await),
        Conflict::RangeTaken(6010)
    );
    // Right after it, and the same numbers in UDP, are free.
    store.claim(&redir("app_3", "default", 6031), &acme.id, None).await.unwrap();
    store.claim(&udp("app_4", "default", 6020), &acme.id, None).await.unwrap();
    // A batch: a range in its turn, seeing the rows before it.
    let outcomes = store
        .claim_many(
            &[redir("app_5", "default", 6040), range("app_4", 6040, 3), range("app_4", 6041, 3)],
            &acme.id,
            None,
        )
        .await
        .unwrap();
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    assert!(matches!(&outcomes[1], Err(StoreError::Conflict(Conflict::RangeTaken(6040)))), "{outcomes:?}");
    assert!(outcomes[2].is_ok(), "{outcomes:?}");

    let table = Table::load(store.snapshot().await.unwrap());
    let row = &table.redirs[&RedirKey::new("default", Protocol::Tcp, 6011)];
    assert_eq!((row.ports, row.last_port(), row.app_id.as_ref()), (20, 6030, "app_2"));
    assert_eq!(table.holder("default", Protocol::Tcp, 6025).map(|r| r.port), Some(6011));
    assert_eq!(table.holder("default", Protocol::Tcp, 6031).map(|r| r.port), Some(6031));
    assert!(table.holder("default", Protocol::Tcp, 6032).is_none());
    assert_eq!(
        table.redirs.keys().filter(|k| k.protocol == Protocol::Tcp).count(),
        5,
        "{:?}",
        table.redirs.keys().collect::<Vec<_>>()
    );
    // The watch carries it as one row with its extent.
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &super::Event| e.revision == claimed) {
        seen.extend(changes.recv().await.unwrap().unwrap());
    }
    let put: Vec<&RedirRow> = seen
        .iter()
        .filter_map(|e| match &e.change {
            super::Change::Put(Record::Redir(r)) if e.revision == claimed => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(put.iter().map(|r| (r.port, r.ports)).collect::<Vec<_>>(), [(6011, 20)]);

    // Released whole: every port free, every port quarantined for app_2.
    store.release(&range("app_2", 6011, 20), &acme.id).await.unwrap();
    let held: Vec<(u16, String)> =
        quarantines(&store).await.into_iter().filter(|(_, a)| a == "app_2").collect();
    assert_eq!(held, (6011..=6030).map(|p| (p, "app_2".to_owned())).collect::<Vec<_>>());
    let table = Table::load(store.snapshot().await.unwrap());
    assert!(table.holder("default", Protocol::Tcp, 6020).is_none());
    assert_eq!(store.previous_port("app_2", "default", Protocol::Tcp).await.unwrap(), Some(6011));
    // Taken back at once by its application: every quarantine of it is lifted.
    store.claim(&range("app_2", 6011, 20), &acme.id, None).await.unwrap();
    assert!(quarantines(&store).await.iter().all(|(_, a)| a != "app_2"), "{:?}", quarantines(&store).await);
    // The application's removal takes its range with it.
    store.remove_app("app_2").await.unwrap();
    let table = Table::load(store.snapshot().await.unwrap());
    assert!(table.holder("default", Protocol::Tcp, 6020).is_none());
    store.claim(&redir("app_5", "cleverapps", 6020), &acme.id, None).await.unwrap();
    store.release(&redir("app_3", "default", 6031), &acme.id).await.unwrap();
    store.claim(&range("app_3", 6012, 19), &acme.id, None).await.unwrap();
}

#[tokio::test]
async fn sqlite_a_range_is_claimed_whole_or_not_at_all() {
    let (store, _dir) = sqlite();
    a_range_is_claimed_whole_or_not_at_all(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_range_is_claimed_whole_or_not_at_all() {
    let (store, _etcd) = etcd().await;
    a_range_is_claimed_whole_or_not_at_all(store).await;
}

/// Issue 34: the largest range a store takes is claimed and released whole, within the
/// backend's transaction (etcd: 128 operations).
async fn the_largest_range_fits_in_one_transaction(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    store.create_app(&app("app_1", &acme)).await.unwrap();
    store.create_app(&app("app_2", &acme)).await.unwrap();
    let n = store.max_range_ports().min(200);
    store.put_node(&node("n1", 0)).await.unwrap();
    store.claim(&range("app_1", 7000, n), &acme.id, None).await.unwrap();
    store.claim(&udp("app_1", "default", 7000), &acme.id, None).await.unwrap();
    store.release(&range("app_1", 7000, n), &acme.id).await.unwrap();
    store.claim(&range("app_1", 7000, n), &acme.id, None).await.unwrap();
    assert_eq!(
        conflict(store.claim(&range("app_2", 7000 + n - 1, n), &acme.id, None).await),
        Conflict::RangeTaken(7000 + n - 1)
    );
    store.remove_app("app_1").await.unwrap();
    let table = Table::load(store.snapshot().await.unwrap());
    assert!(table.redirs.is_empty(), "{:?}", table.redirs.keys().collect::<Vec<_>>());
}

#[tokio::test]
async fn sqlite_the_largest_range_fits_in_one_transaction() {
    let (store, _dir) = sqlite();
    the_largest_range_fits_in_one_transaction(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_the_largest_range_fits_in_one_transaction() {
    let (store, _etcd) = etcd().await;
    the_largest_range_fits_in_one_transaction(store).await;
}

/// A node's record at `revision` (through serde, so that a field added with a default
/// leaves this helper as it is).
fn node(name: &str, revision: Revision) -> NodeRecord {
    serde_json::from_value(serde_json::json!({
        "name": name, "publicAddress": "127.0.0.1", "namespaces": ["default"],
        "lastSeen": 0, "revision": revision, "listening": 0,
    }))
    .expect("a node record")
}

/// The quarantines a snapshot holds, as (port, application).
async fn quarantines(store: &Arc<dyn Store>) -> Vec<(u16, String)> {
    let snapshot = store.snapshot().await.unwrap();
    let mut found: Vec<(u16, String)> = snapshot
        .records
        .into_iter()
        .filter_map(|r| match r {
            Record::Quarantine(q) => Some((q.port, q.app_id)),
            _ => None,
        })
        .collect();
    found.sort();
    found
}

/// Issue 31: a port freed by a removal goes to another application only once every
/// registered node has published a revision at or past the removal, or has been forgotten;
/// the application that freed it takes it back at once; a claim or a sweep ends it.
async fn a_freed_port_waits_for_every_node(store: Arc<dyn Store>) {
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    for id in ["app_1", "app_2", "app_3"] {
        store.create_app(&app(id, &acme)).await.unwrap();
    }
    let claimed = store.claim(&redir("app_1", "default", 6200), &acme.id, None).await.unwrap();
    store.put_node(&node("n1", claimed)).await.unwrap();
    store.put_node(&node("n2", claimed)).await.unwrap();
    let released = store.release(&redir("app_1", "default", 6200), &acme.id).await.unwrap();
    assert_eq!(quarantines(&store).await, [(6200, "app_1".to_owned())]);
    let waits = |names: &[&str]| Conflict::Quarantined(names.iter().map(|n| n.to_string()).collect());
    let other = redir("app_2", "default", 6200);
    assert_eq!(conflict(store.claim(&other, &acme.id, None).await), waits(&["n1", "n2"]));
    store.put_node(&node("n1", released)).await.unwrap();
    assert_eq!(conflict(store.claim(&other, &acme.id, None).await), waits(&["n2"]));
    // The same number in UDP is another port, and a batch refuses the held row alone.
    store.claim(&udp("app_2", "default", 6200), &acme.id, None).await.unwrap();
    let outcomes =
        store.claim_many(&[other.clone(), redir("app_3", "default", 6201)], &acme.id, None).await.unwrap();
    assert!(matches!(&outcomes[0], Err(StoreError::Conflict(c)) if *c == waits(&["n2"])), "{outcomes:?}");
    assert!(outcomes[1].is_ok(), "{outcomes:?}");
    // The application that freed it takes it back at once, which ends the quarantine.
    store.claim(&redir("app_1", "default", 6200), &acme.id, None).await.unwrap();
    assert_eq!(quarantines(&store).await, []);
    let again = store.release(&redir("app_1", "default", 6200), &acme.id).await.unwrap();
    assert_eq!(conflict(store.claim(&other, &acme.id, None).await), waits(&["n1", "n2"]));

    // A node up cannot be forgotten; one down can, and is no longer waited for.
    let stop = tokio_util::sync::CancellationToken::new();
    store.keep_alive("n2", std::time::Duration::from_secs(10), stop.clone()).await;
    let mut alive = false;
    for _ in 0..250 {
        let snapshot = store.snapshot().await.unwrap();
        if snapshot.records.iter().any(|r| matches!(r, Record::Alive(n) if n == "n2")) {
            alive = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(alive, "n2 is marked alive within 5 s");
    assert_eq!(conflict(store.forget_node("n2").await), Conflict::Alive);
    assert_eq!(conflict(store.forget_node("n9").await), Conflict::NotFound);
    store.forget_node("n1").await.unwrap();
    assert_eq!(conflict(store.claim(&other, &acme.id, None).await), waits(&["n2"]));
    // n2 confirms: the port is anyone's, and the claim ends its quarantine.
    store.put_node(&node("n2", again)).await.unwrap();
    store.claim(&other, &acme.id, None).await.unwrap();
    assert_eq!(quarantines(&store).await, []);

    // A sweep deletes what every node confirmed, and only that.
    let freed = store.release(&redir("app_3", "default", 6201), &acme.id).await.unwrap();
    let table = Table::load(store.snapshot().await.unwrap());
    assert!(table.confirmed_quarantines().is_empty(), "n2 has not confirmed the removal yet");
    let held: Vec<_> = table.quarantine.values().cloned().collect();
    store.sweep_quarantines(&held).await.unwrap();
    assert_eq!(quarantines(&store).await, [(6201, "app_3".to_owned())]);
    store.put_node(&node("n2", freed)).await.unwrap();
    let table = Table::load(store.snapshot().await.unwrap());
    assert_eq!(
        table.quarantine_waits(&RedirKey::new("default", crate::wire::Protocol::Tcp, 6201), "app_2"),
        Vec::<String>::new()
    );
    store.sweep_quarantines(&table.confirmed_quarantines()).await.unwrap();
    assert_eq!(quarantines(&store).await, []);
    stop.cancel();
}

#[tokio::test]
async fn sqlite_a_freed_port_waits_for_every_node() {
    let (store, _dir) = sqlite();
    a_freed_port_waits_for_every_node(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_freed_port_waits_for_every_node() {
    let (store, _etcd) = etcd().await;
    a_freed_port_waits_for_every_node(store).await;
}

#[tokio::test]
async fn sqlite_a_snapshot_of_a_large_table_holds_every_row() {
    let (store, _dir) = sqlite();
    a_snapshot_of_a_large_table_holds_every_row(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_a_snapshot_of_a_large_table_holds_every_row() {
    let (store, _etcd) = etcd().await;
    a_snapshot_of_a_large_table_holds_every_row(store).await;
}

/// A snapshot read in pages of a few keys is the snapshot read at once: no key is skipped
/// or read twice between pages, and every page is read at the first one's revision.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_a_snapshot_in_small_pages_is_the_whole_table() {
    let (store, _server) = etcd_store().await;
    let acme = org("acme");
    store.create_org(&acme).await.unwrap();
    for i in 0..20 {
        store.create_app(&app(&format!("app_{i}"), &acme)).await.unwrap();
        store.claim(&redir(&format!("app_{i}"), "default", 7000 + i), &acme.id, None).await.unwrap();
    }
    let whole = store.snapshot_in_pages(1_000_000).await.unwrap();
    let paged = store.snapshot_in_pages(7).await.unwrap();
    assert!(whole.records.len() > 40, "more records than pages of 7: {}", whole.records.len());
    assert_eq!(paged.revision, whole.revision);
    assert_eq!(format!("{:?}", paged.records), format!("{:?}", whole.records));
}

fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("t.db")).unwrap();
    (Arc::new(store), dir)
}

#[tokio::test]
async fn sqlite_udp_ports_are_a_space_of_their_own() {
    let (store, _dir) = sqlite();
    udp_ports_are_a_space_of_their_own(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_udp_ports_are_a_space_of_their_own() {
    let (store, _etcd) = etcd().await;
    udp_ports_are_a_space_of_their_own(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_claims_and_releases() {
    let (store, _dir) = sqlite();
    claims_and_releases(store).await;
}

#[tokio::test]
async fn sqlite_watch_replays_every_change_in_order() {
    let (store, _dir) = sqlite();
    the_watch_replays_every_change_in_order(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_claims_never_share_a_port() {
    let (store, _dir) = sqlite();
    concurrent_claims_never_share_a_port(store).await;
}

#[tokio::test]
async fn sqlite_a_batch_claims_each_row_as_one_claim_would() {
    let (store, _dir) = sqlite();
    a_batch_claims_each_row_as_one_claim_would(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_a_batch_claims_each_row_as_one_claim_would() {
    let (store, _etcd) = etcd().await;
    a_batch_claims_each_row_as_one_claim_would(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_claims_never_pass_the_quota() {
    let (store, _dir) = sqlite();
    concurrent_claims_never_pass_the_quota(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_concurrent_claims_never_pass_the_quota() {
    let (store, _etcd) = etcd().await;
    concurrent_claims_never_pass_the_quota(store).await;
}

#[cfg(feature = "etcd")]
async fn etcd() -> (Arc<dyn Store>, harness::Etcd) {
    let (store, server) = etcd_store().await;
    (Arc::new(store), server)
}

/// A fresh etcd, and the store on it.
#[cfg(feature = "etcd")]
async fn etcd_store() -> (super::etcd::Etcd, harness::Etcd) {
    let server = tokio::task::spawn_blocking(harness::Etcd::start).await.unwrap();
    let store = super::etcd::Etcd::connect(&server.url(), &Default::default()).await.unwrap();
    (store, server)
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_claims_and_releases() {
    let (store, _etcd) = etcd().await;
    claims_and_releases(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_watch_replays_every_change_in_order() {
    let (store, _etcd) = etcd().await;
    the_watch_replays_every_change_in_order(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_concurrent_claims_never_share_a_port() {
    let (store, _etcd) = etcd().await;
    concurrent_claims_never_share_a_port(store).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_watch_from_a_compacted_revision_says_so() {
    let (store, etcd) = etcd().await;
    let acme = org("acme");
    let before = store.snapshot().await.unwrap().revision;
    store.create_org(&acme).await.unwrap();
    store.create_app(&app("app_1", &acme)).await.unwrap();
    let now = store.snapshot().await.unwrap().revision;
    let _etcd = tokio::task::spawn_blocking(move || {
        etcd.compact(now);
        etcd
    })
    .await
    .unwrap();
    // etcd creates the watch, then cancels it: the compaction comes first in the stream.
    match store.watch(before).await {
        Err(StoreError::Compacted) => {}
        Ok(mut changes) => {
            let first = tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv()).await;
            assert!(matches!(first, Ok(Some(Err(StoreError::Compacted)))), "{first:?}");
        }
        Err(other) => panic!("expected Compacted, got {other}"),
    }
    assert!(store.watch(now).await.is_ok(), "a watch from the compacted revision itself is fine");
}

//! Webhooks (issue 35), end to end: the real server, and a receiver run by the test on
//! loopback that answers as each test says, recording every post.
//!
//! - a receiver that fails three times then succeeds gets the event, signed, and the
//!   webhook says delivered, with nothing failed;
//! - a receiver that never answers does not slow `add` (its p99 against no webhook);
//! - `kill -9` of the server while a delivery is under way loses nothing: the restarted
//!   server delivers it;
//! - an event retried past `give_up_after` is listed as failed, and the next is delivered;
//! - in a fleet on etcd, each event is posted once; and when the node that delivers is
//!   killed, another takes its role over within the term and delivers what it left.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, Server, TcpService};
use hmac::{Hmac, Mac};
use serde_json::Value;

/// One post the receiver got.
#[derive(Debug, Clone)]
struct Post {
    headers: Vec<(String, String)>,
    body: String,
}

impl Post {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map_or("", |(_, v)| v.as_str())
    }

    fn event(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// What the receiver answers to its n-th post (0-based): a status, or nothing at all.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Never,
}

/// A webhook receiver on 127.0.0.1; stops accepting when dropped (the test process ends
/// its threads).
struct Receiver {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Receiver {
    fn start(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(answer);
        let seen = posts.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (seen, count, answer) = (seen.clone(), count.clone(), answer.clone());
                thread::spawn(move || serve(stream, &seen, &count, &*answer));
            }
        });
        Receiver { addr, posts }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

/// Reads requests from one connection (keep-alive) and answers each as `answer` says.
fn serve(stream: TcpStream, seen: &Mutex<Vec<Post>>, count: &AtomicUsize, answer: &dyn Fn(usize) -> Answer) {
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = count.fetch_add(1, Ordering::SeqCst);
        seen.lock().unwrap().push(Post { headers, body: String::from_utf8_lossy(&body).into_owned() });
        match answer(n) {
            Answer::Status(status) => {
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                if writer.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Never => {
                // Holds the connection without a word until the other side gives up.
                let mut sink = Vec::new();
                let _ = reader.read_to_end(&mut sink);
                return;
            }
        }
    }
}

/// Registers a webhook on the default organisation: (its id, its secret).
fn register(server: &Server, url: &str, kinds: &[&str]) -> (String, String) {
    let mut args = vec!["webhooks", "create", "--url", url, "-F", "json"];
    for kind in kinds {
        args.extend(["--kind", kind]);
    }
    let created = server.cli_json(&args);
    assert!(created.get("secret").is_some_and(Value::is_string), "{created}");
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

/// The webhook `id` as `webhooks list -F json` shows it.
fn webhook(server: &Server, id: &str) -> Value {
    let list = server.cli_json(&["webhooks", "list", "-F", "json"]);
    let found = list.as_array().unwrap().iter().find(|w| w["id"] == id).cloned();
    found.unwrap_or_else(|| panic!("no webhook {id} in {list}"))
}

/// Whether `post` carries a valid signature by `secret`, with a timestamp within a minute.
fn signed(post: &Post, secret: &str) -> bool {
    let timestamp = post.header("X-Tcp-Redirs-Timestamp");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let fresh = timestamp.parse::<i64>().is_ok_and(|t| (now - t).abs() < 60);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", post.body).as_bytes());
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    fresh && post.header("X-Tcp-Redirs-Signature") == want
}

/// A receiver that answers 500 three times, then 200: the event arrives four times, each
/// post signed, and the webhook then says it is delivered, with no failure listed.
#[test]
fn a_receiver_that_fails_three_times_then_succeeds_gets_the_event_marked_delivered() {
    let echo = TcpService::echo();
    let server = Server::start();
    let receiver = Receiver::start(|n| if n < 3 { Answer::Status(500) } else { Answer::Status(204) });
    let (id, secret) = register(&server, &receiver.url(), &["redirection.added"]);
    let start = webhook(&server, &id)["delivery"]["delivered"].as_i64();
    let app = server.create_app("db", echo.addr());
    let port = server.add(app["id"].as_str().unwrap(), "default");

    let delivered = wait_until(Duration::from_secs(30), "the webhook says delivered", || {
        let hook = webhook(&server, &id);
        if hook["delivery"]["delivered"].as_i64() > start && hook["delivery"].get("pending").is_none() {
            Ok(hook)
        } else {
            Err(format!("{hook}"))
        }
    });
    let posts = receiver.posts();
    assert_eq!(posts.len(), 4, "three failures and one success: {posts:?}");
    let event = posts[3].event();
    assert_eq!(event["kind"], "redirection.added");
    assert_eq!(event["after"]["port"], port);
    assert_eq!(delivered["delivery"]["delivered"], event["id"], "{delivered}");
    assert!(delivered["delivery"]["failed"].as_array().unwrap().is_empty(), "{delivered}");
    for post in &posts {
        assert_eq!(post.event()["id"], event["id"], "the same event each time");
        assert_eq!(post.header("X-Tcp-Redirs-Event"), event["id"].to_string());
        assert!(signed(post, &secret), "a valid signature: {post:?}");
    }
    // A wrong secret does not verify.
    assert!(!signed(&posts[3], "whsec_wrong"));
    // The application's creation was not asked for (kinds): never sent.
    assert!(posts.iter().all(|p| p.event()["kind"] == "redirection.added"));
}

/// A receiver that takes posts and never answers does not slow `add`: its p99 with the
/// webhook stays within the p99 without one (plus a margin for a loaded machine).
#[test]
fn a_receiver_that_never_answers_does_not_slow_add() {
    const ADDS: usize = 40;
    let echo = TcpService::echo();
    let server = Server::start();
    let org = server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
    let apps: Vec<String> = (0..2 * ADDS)
        .map(|i| {
            let body = format!(r#"{{"name":"a{i}","instances":[{{"address":"{}"}}]}}"#, echo.addr());
            let app =
                server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
            app["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let timed = |apps: &[String]| {
        let mut times: Vec<Duration> = apps
            .iter()
            .map(|app| {
                let started = Instant::now();
                let path = format!("/v2/organisations/{org}/applications/{app}/tcpRedirs");
                server.api("POST", &path, Some(r#"{"namespace":"default"}"#)).ok_json();
                started.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() * 99 / 100]
    };
    let without = timed(&apps[..ADDS]);
    let receiver = Receiver::start(|_| Answer::Never);
    let (id, _) = register(&server, &receiver.url(), &[]);
    let with = timed(&apps[ADDS..]);
    wait_until(Duration::from_secs(20), "the receiver gets the first post", || {
        if receiver.posts().is_empty() {
            Err(format!("{}", webhook(&server, &id)))
        } else {
            Ok(())
        }
    });
    assert!(
        with <= without * 3 + Duration::from_millis(50),
        "add p99 with a dead receiver {with:?}, without {without:?}"
    );
    eprintln!("add p99: {without:?} without a webhook, {with:?} with one that never answers");
}

/// `kill -9` of the server while a post waits for its answer: the restarted server sends
/// the event again and the webhook says delivered; nothing is lost.
#[test]
fn kill_9_during_a_delivery_loses_none() {
    let echo = TcpService::echo();
    let server = Server::start();
    let receiver = Receiver::start(|n| if n == 0 { Answer::Never } else { Answer::Status(200) });
    let (id, secret) = register(&server, &receiver.url(), &["application.created"]);
    let start = webhook(&server, &id)["delivery"]["delivered"].as_i64();
    server.create_app("db", echo.addr());
    wait_until(Duration::from_secs(20), "the first post arrives", || {
        if receiver.posts().is_empty() {
            Err("none yet".to_owned())
        } else {
            Ok(())
        }
    });
    let server = server.crash_and_restart();
    let hook = wait_until(Duration::from_secs(30), "the restarted server delivers", || {
        let hook = webhook(&server, &id);
        if hook["delivery"]["delivered"].as_i64() > start {
            Ok(hook)
        } else {
            Err(format!("{hook}"))
        }
    });
    let posts = receiver.posts();
    assert!(posts.len() >= 2, "{posts:?}");
    let event = posts.last().unwrap().event();
    assert_eq!(posts[0].event()["id"], event["id"], "the same event again");
    assert_eq!(event["after"]["name"], "db");
    assert_eq!(hook["delivery"]["delivered"], event["id"]);
    assert!(signed(posts.last().unwrap(), &secret));
}

/// An event retried past `give_up_after` is listed as failed, with its attempts and
/// error, and the webhook's next event is delivered after it.
#[test]
fn an_event_retried_too_long_is_listed_as_failed_and_the_next_goes_on() {
    let echo = TcpService::echo();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[webhooks]\ntimeout = 2\ngive_up_after = 1\n").unwrap();
    let server = Server::builder().config(config.path()).start();
    // The first event's posts fail until it is given up; then every post succeeds.
    let failing = Arc::new(Mutex::new(true));
    let flag = failing.clone();
    let receiver =
        Receiver::start(
            move |_| if *flag.lock().unwrap() { Answer::Status(503) } else { Answer::Status(200) },
        );
    let (id, _) = register(&server, &receiver.url(), &["application.created"]);
    server.create_app("first", echo.addr());
    let hook = wait_until(Duration::from_secs(30), "the first event is given up", || {
        let hook = webhook(&server, &id);
        if hook["delivery"]["failed"].as_array().is_some_and(|f| !f.is_empty()) {
            Ok(hook)
        } else {
            Err(format!("{hook}"))
        }
    });
    let failed = &hook["delivery"]["failed"][0];
    assert!(failed["attempts"].as_u64() >= Some(2), "{hook}");
    assert!(failed["error"].as_str().unwrap().contains("503"), "{hook}");
    *failing.lock().unwrap() = false;
    server.create_app("second", echo.addr());
    wait_until(Duration::from_secs(30), "the second event is delivered", || {
        let posts = receiver.posts();
        match posts.last() {
            Some(p) if p.event()["after"]["name"] == "second" => Ok(()),
            _ => Err(format!("{} posts", posts.len())),
        }
    });
    let hook = webhook(&server, &id);
    assert_eq!(hook["delivery"]["failed"].as_array().unwrap().len(), 1, "{hook}");
    // Bad URLs are refused with what to do.
    let out = server.cli(&["webhooks", "create", "--url", "http://192.0.2.1/hook"]);
    out.assert_error(1, &["loopback"]);
}

/// A 3-node fleet on one etcd delivers each event once to a healthy receiver, whichever
/// node made the change: one node holds the delivery role.
#[cfg(feature = "etcd")]
#[test]
fn a_three_node_fleet_delivers_each_event_once() {
    let etcd = common::etcd::Etcd::start();
    let echo = TcpService::echo();
    let token = common::random_token();
    let nodes: Vec<Server> = thread::scope(|scope| {
        let starting: Vec<_> = [("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4")]
            .into_iter()
            .map(|(name, ip)| {
                let builder =
                    Server::builder().ip(ip).token(&token).args(&["--store", &etcd.url(), "--node", name]);
                scope.spawn(move || builder.start())
            })
            .collect();
        starting.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    let receiver = Receiver::start(|_| Answer::Status(200));
    let (id, secret) = register(&nodes[0], &receiver.url(), &["application.created"]);
    for round in 0..3 {
        for (i, node) in nodes.iter().enumerate() {
            node.create_app(&format!("app-{round}-{i}"), echo.addr());
        }
    }
    wait_until(Duration::from_secs(30), "nine events delivered", || {
        let hook = webhook(&nodes[1], &id);
        let posts = receiver.posts();
        if posts.len() >= 9 && hook["delivery"].get("pending").is_none() {
            Ok(())
        } else {
            Err(format!("{} posts; {hook}", posts.len()))
        }
    });
    let posts = receiver.posts();
    let mut ids: Vec<i64> = posts.iter().map(|p| p.event()["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, each once: {ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 9, "{posts:?}");
    assert!(posts.iter().all(|p| signed(p, &secret)));
    let nodes_seen: std::collections::BTreeSet<String> =
        posts.iter().map(|p| p.event()["node"].as_str().unwrap().to_owned()).collect();
    assert_eq!(nodes_seen.len(), 3, "changes made through every node: {nodes_seen:?}");
}

/// In a fleet, `kill -9` of the node that holds the delivery role while its post of an
/// event waits for an answer: another node takes the role over within the term (15 s, and
/// its next renewal 2 s later at most) and delivers that event again and the events recorded
/// after the kill, in order.
#[cfg(feature = "etcd")]
#[test]
fn a_fleet_node_takes_deliveries_over_when_the_holder_is_killed() {
    let etcd = common::etcd::Etcd::start();
    let echo = TcpService::echo();
    let token = common::random_token();
    let nodes: Vec<Server> = thread::scope(|scope| {
        let starting: Vec<_> = [("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4")]
            .into_iter()
            .map(|(name, ip)| {
                let builder =
                    Server::builder().ip(ip).token(&token).args(&["--store", &etcd.url(), "--node", name]);
                scope.spawn(move || builder.start())
            })
            .collect();
        starting.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    const TAKEN: &str = "webhook deliveries run";
    let holder = wait_until(Duration::from_secs(20), "a node takes the delivery role", || {
        nodes.iter().position(|n| n.log().contains(TAKEN)).ok_or_else(|| "none yet".to_owned())
    });
    let survivors: Vec<usize> = (0..3).filter(|&i| i != holder).collect();
    // The first post is never answered: the holder is in the middle of it when it dies.
    let receiver = Receiver::start(|n| if n == 0 { Answer::Never } else { Answer::Status(200) });
    let (id, secret) = register(&nodes[survivors[0]], &receiver.url(), &["application.created"]);
    nodes[survivors[0]].create_app("before", echo.addr());
    wait_until(Duration::from_secs(20), "the holder posts the first event", || {
        receiver.posts().first().map(Post::event).ok_or_else(|| "no post yet".to_owned())
    });
    nodes[holder].send_signal(libc::SIGKILL);
    let killed = Instant::now();
    for (i, &node) in survivors.iter().enumerate() {
        nodes[node].create_app(&format!("after-{i}"), echo.addr());
    }
    let taker = wait_until(Duration::from_secs(30), "a surviving node takes the role over", || {
        survivors
            .iter()
            .copied()
            .find(|&i| nodes[i].log().contains(TAKEN))
            .ok_or_else(|| "not yet".to_owned())
    });
    let took = killed.elapsed();
    eprintln!("node {taker} took the delivery role over {took:?} after the holder's kill -9");
    assert!(took < Duration::from_secs(20), "the role's term is 15 s, renewed every 2 s: {took:?}");
    wait_until(Duration::from_secs(30), "the new holder delivers all three", || {
        let hook = webhook(&nodes[taker], &id);
        let names: Vec<String> = receiver
            .posts()
            .iter()
            .map(|p| p.event()["after"]["name"].as_str().unwrap_or("").to_owned())
            .collect();
        if names.iter().filter(|n| n.starts_with("after-")).count() >= 2
            && hook["delivery"].get("pending").is_none()
        {
            Ok(())
        } else {
            Err(format!("{names:?}; {hook}"))
        }
    });
    let posts = receiver.posts();
    let names: Vec<String> =
        posts.iter().map(|p| p.event()["after"]["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["before", "before", "after-0", "after-1"], "at least once, in order: {posts:?}");
    let ids: Vec<i64> = posts.iter().map(|p| p.event()["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
    assert!(posts.iter().all(|p| signed(p, &secret)));
    assert_eq!(webhook(&nodes[taker], &id)["delivery"]["delivered"].as_i64(), ids.last().copied());
}

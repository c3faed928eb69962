//! The same server and client code that runs on turmoil, over real loopback TCP: no part of
//! `jabberwock-xmpp` depends on the simulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use jabberwock_e2e::{EngineConfig, Event, FullJid, Protocol, new_engine};
use jabberwock_xmpp::{
    Account, Command, Device, DeviceConfig, Disk, Hooks, Note, Server, ServerConfig, Transport,
};
use rand_chacha::rand_core::SeedableRng;

/// A fixed clock (the test only needs ordering from the network, not time) and a record of
/// what devices showed their users.
#[derive(Default)]
struct Recorder {
    shown: RefCell<Vec<(String, String)>>,
}

impl Hooks for Recorder {
    fn now(&self) -> Duration {
        jabberwock_e2e::time::EPOCH
    }

    fn note(&self, note: Note<'_>) {
        if let Note::Event { device, event: Event::Plaintext { body, .. } } = note {
            self.shown.borrow_mut().push((device.to_string(), body.clone()));
        }
    }
}

#[derive(Clone)]
struct Loopback(SocketAddr);

impl Transport for Loopback {
    type Io = tokio::net::TcpStream;

    async fn connect(&self, _host: &str, _port: u16) -> std::io::Result<Self::Io> {
        tokio::net::TcpStream::connect(self.0).await
    }
}

#[test]
fn chat_over_real_tcp() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let transport = Loopback(listener.local_addr().unwrap());
        let recorder = Rc::new(Recorder::default());
        let hooks: Rc<dyn Hooks> = recorder.clone();

        let mut disk = Disk::default();
        for user in ["alice", "bob"] {
            let account = Account { password: format!("pw-{user}"), ..Account::default() };
            disk.accounts.insert(format!("{user}@a.example").parse().unwrap(), account);
        }
        let cfg = ServerConfig {
            domain: "a.example".into(),
            peers: BTreeSet::new(),
            keepalive: Duration::from_secs(30),
            tls: None,
        };
        let server = Server::new(cfg, Rc::new(RefCell::new(disk)), Rc::clone(&hooks), transport.clone());
        server.start();
        tokio::task::spawn_local(async move {
            while let Ok((io, _)) = listener.accept().await {
                tokio::task::spawn_local(Rc::clone(&server).serve_c2s(io));
            }
        });

        for (user, peer, body) in [("alice", "bob", "over the wire"), ("bob", "alice", "and back")] {
            let jid: FullJid = format!("{user}@a.example/desk").parse().unwrap();
            let cfg = DeviceConfig {
                jid: jid.clone(),
                password: format!("pw-{user}"),
                server_host: "a.example".into(),
                contacts: [format!("{peer}@a.example").parse().unwrap()].into(),
                keepalive: Duration::from_secs(30),
                reconnect_after: Duration::from_millis(50),
                tls: None,
                joins: None,
            };
            let mut rng = Box::new(rand_chacha::ChaCha20Rng::from_seed([7; 32]));
            let engine = new_engine(
                Protocol::of(&jabberwock_e2e::plain::PROTOCOL),
                &jid,
                &mut *rng,
                &EngineConfig::default(),
            );
            let device = Device::new(cfg, engine, rng, Rc::clone(&hooks), transport.clone());
            let send = Command::Send {
                to: format!("{peer}@a.example").parse().unwrap(),
                body: body.into(),
                parts: Default::default(),
            };
            tokio::task::spawn_local(device.run(vec![(hooks.now(), send)]));
        }

        let delivered = async {
            while recorder.shown.borrow().len() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), delivered).await.expect("both messages delivered");
        let mut shown = recorder.shown.borrow().clone();
        shown.sort();
        assert_eq!(
            shown,
            vec![
                ("alice@a.example/desk".to_owned(), "and back".to_owned()),
                ("bob@a.example/desk".to_owned(), "over the wire".to_owned()),
            ]
        );
    });
}

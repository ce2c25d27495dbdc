//! The local cluster tool (`e2e/cluster/runnel-cluster`): `up` gives a Ready node in its zone,
//! cluster DNS that answers for Service names (asked from the host and from inside a pod), and
//! a default StorageClass whose claims bind when a pod uses them; `down` leaves the host exactly as `up` found it: processes, mounts,
//! links, addresses, routes, iptables/ip6tables rules and nftables tables, the node's
//! directories and cgroups, and the sysctls the kubelet and kube-proxy would touch.

use anyhow::{bail, ensure, Context};
use runnel_e2e::local_cluster::{
    self, ClusterLock, LocalCluster, DNS_SERVICE_IP, HOST_ADDRESS, NODE, PAUSE_IMAGE,
    STORAGE_CLASS, ZONE,
};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn up_serves_dns_and_volumes_and_down_restores_the_host() -> anyhow::Result<()> {
    // Binaries and packages first: the snapshot needs iptables-save, ip6tables-save and nft,
    // and installing packages is not the cluster's doing.
    local_cluster::prepare().context("runnel-cluster prepare")?;

    let lock = ClusterLock::acquire()?;
    let before = if lock.is_up() {
        eprintln!(
            "the local cluster was already up: reusing it; the host snapshot comparison is \
             not made (it needs a cluster this test starts), and the cluster stays up"
        );
        None
    } else {
        Some(HostSnapshot::take()?)
    };
    let started = Instant::now();
    let cluster = lock.up()?;
    eprintln!(
        "runnel-cluster up ({:.1?}):\n{}",
        started.elapsed(),
        cluster.up_log()
    );

    node_is_ready_in_its_zone(&cluster)?;
    dns_answers(
        HOST_ADDRESS,
        "kubernetes.default.svc.cluster.local",
        Ipv4Addr::new(198, 19, 0, 1),
    )
    .context("DNS from the host")?;
    claims_bind_and_pods_resolve_names(&cluster)?;

    if let Some(before) = before {
        let started = Instant::now();
        let down = cluster.down()?;
        eprintln!(
            "runnel-cluster down ({:.1?}):\n{}",
            started.elapsed(),
            down.stderr
        );
        let after = HostSnapshot::take()?;
        before.assert_same(&after);
    }
    Ok(())
}

fn node_is_ready_in_its_zone(cluster: &LocalCluster) -> anyhow::Result<()> {
    let node = cluster.kubectl(&["get", "node", NODE, "-o", "json"]);
    ensure!(node.success(), "{node}");
    let node: serde_json::Value = serde_json::from_str(&node.stdout).context("node JSON")?;
    ensure!(
        node["metadata"]["labels"]["topology.kubernetes.io/zone"] == ZONE,
        "zone label: {}",
        node["metadata"]["labels"]
    );
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    ensure!(ready, "node not Ready: {}", node["status"]["conditions"]);
    ensure!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://2.")),
        "runtime: {}",
        node["status"]["nodeInfo"]
    );
    Ok(())
}

/// Asks CoreDNS, through its Service address (so through kube-proxy's rules), for the A record
/// of a Service, from `source` (an address of the current network namespace).
fn dns_answers(source: Ipv4Addr, name: &str, expected: Ipv4Addr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind((source, 0)).context("binding a UDP socket")?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    for id in 1u16.. {
        ensure!(
            Instant::now() < deadline,
            "no DNS answer for {name} from {DNS_SERVICE_IP}: {last}"
        );
        socket.send_to(&dns_query(id, name), (DNS_SERVICE_IP, 53))?;
        let mut buf = [0u8; 512];
        match socket.recv(&mut buf) {
            Ok(n) => match dns_a_records(&buf[..n], id) {
                Ok(addrs) if addrs == [expected] => return Ok(()),
                Ok(addrs) => bail!("{name} resolved to {addrs:?}, not {expected}"),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!("the loop returns or fails")
}

/// The same question from inside a pod: a thread joins the pod's network namespace (that of a
/// process in the pod's cgroup), so the query goes pod -> bridge -> Service -> CoreDNS pod.
fn dns_answers_in_pod(cluster: &LocalCluster, ns: &str, pod: &str) -> anyhow::Result<()> {
    let uid = cluster.kubectl(&[
        "get",
        "pod",
        pod,
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    ensure!(uid.success(), "{uid}");
    let marker = format!("pod{}", uid.stdout.trim());
    let pid = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p.join("cgroup")).is_ok_and(|c| c.contains(&marker)))
        .with_context(|| format!("no process of pod {ns}/{pod} ({marker})"))?;
    let netns = std::fs::File::open(pid.join("ns/net")).context("the pod's network namespace")?;
    std::thread::spawn(move || -> anyhow::Result<()> {
        use std::os::fd::AsFd;
        rustix::thread::move_into_link_name_space(
            netns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .context("setns into the pod's network namespace")?;
        dns_answers(
            Ipv4Addr::UNSPECIFIED,
            "kubernetes.default.svc.cluster.local",
            Ipv4Addr::new(198, 19, 0, 1),
        )?;
        dns_answers(
            Ipv4Addr::UNSPECIFIED,
            "kube-dns.kube-system.svc.cluster.local",
            DNS_SERVICE_IP,
        )
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the DNS thread panicked"))?
}

fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap_or(63));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    q
}

/// The A records of a response to query `id` with one question.
fn dns_a_records(msg: &[u8], id: u16) -> anyhow::Result<Vec<Ipv4Addr>> {
    ensure!(msg.len() >= 12, "short DNS response");
    ensure!(msg[..2] == id.to_be_bytes(), "response to another query");
    let rcode = msg[3] & 0x0f;
    ensure!(rcode == 0, "DNS rcode {rcode}");
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = 12;
    at = skip_name(msg, at)? + 4; // the question
    let mut addrs = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let field = |i: usize| msg.get(i).copied().context("truncated DNS answer");
        let rtype = u16::from_be_bytes([field(at)?, field(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([field(at + 8)?, field(at + 9)?]));
        at += 10;
        if rtype == 1 && len == 4 {
            addrs.push(Ipv4Addr::new(
                field(at)?,
                field(at + 1)?,
                field(at + 2)?,
                field(at + 3)?,
            ));
        }
        at += len;
    }
    Ok(addrs)
}

fn skip_name(msg: &[u8], mut at: usize) -> anyhow::Result<usize> {
    loop {
        let len = *msg.get(at).context("truncated DNS name")?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2), // compression pointer
            l => at += 1 + usize::from(l),
        }
    }
}

/// Two claims without a class get the default one, wait for their pod, bind to volumes the
/// provisioner makes under `$RUNNEL_HOME/cluster/volumes`, and go away with the claims. The
/// pod, meanwhile, resolves Service names.
fn claims_bind_and_pods_resolve_names(cluster: &LocalCluster) -> anyhow::Result<()> {
    let ns = "local-cluster-test";
    let out = cluster.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data-a, namespace: {ns}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data-b, namespace: {ns}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 2Gi}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: user, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
    - name: main
      image: {PAUSE_IMAGE}
      imagePullPolicy: Never
      volumeMounts: [{{name: a, mountPath: /a}}, {{name: b, mountPath: /b}}]
  volumes:
    - {{name: a, persistentVolumeClaim: {{claimName: data-a}}}}
    - {{name: b, persistentVolumeClaim: {{claimName: data-b}}}}
"#
    ));
    ensure!(out.success(), "{out}");
    let ready = cluster.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/user",
        "-n",
        ns,
        "--timeout=90s",
    ]);
    if !ready.success() {
        let pods = cluster.kubectl(&["describe", "pod", "user", "-n", ns]);
        let claims = cluster.kubectl(&["describe", "pvc", "-n", ns]);
        bail!("{ready}\n{pods}\n{claims}");
    }

    dns_answers_in_pod(cluster, ns, "user").context("DNS from a pod")?;

    let volumes_dir = local_cluster::cluster_dir().join("volumes");
    let mut paths = Vec::new();
    for claim in ["data-a", "data-b"] {
        let pvc = cluster.kubectl(&["get", "pvc", claim, "-n", ns, "-o", "json"]);
        ensure!(pvc.success(), "{pvc}");
        let pvc: serde_json::Value = serde_json::from_str(&pvc.stdout)?;
        ensure!(
            pvc["status"]["phase"] == "Bound",
            "{claim}: {}",
            pvc["status"]
        );
        ensure!(
            pvc["spec"]["storageClassName"] == STORAGE_CLASS,
            "{claim} got class {}",
            pvc["spec"]["storageClassName"]
        );
        let pv_name = pvc["spec"]["volumeName"].as_str().context("volumeName")?;
        let pv = cluster.kubectl(&["get", "pv", pv_name, "-o", "json"]);
        ensure!(pv.success(), "{pv}");
        let pv: serde_json::Value = serde_json::from_str(&pv.stdout)?;
        let path = pv["spec"]["local"]["path"].as_str().context("local path")?;
        ensure!(
            Path::new(path).starts_with(&volumes_dir) && Path::new(path).is_dir(),
            "{pv_name}: {path} is not a directory under {}",
            volumes_dir.display()
        );
        paths.push((pv_name.to_string(), path.to_string()));
    }

    let out = cluster.kubectl(&["delete", "pod", "user", "-n", ns, "--timeout=60s"]);
    ensure!(out.success(), "{out}");
    let out = cluster.kubectl(&["delete", "pvc", "data-a", "data-b", "-n", ns]);
    ensure!(out.success(), "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for (pv, path) in &paths {
        loop {
            let gone = cluster.kubectl(&["get", "pv", pv, "--ignore-not-found", "-o", "name"]);
            ensure!(gone.success(), "{gone}");
            if gone.stdout.trim().is_empty() && !Path::new(path).exists() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{pv} ({path}) not removed after its claim was deleted"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let out = cluster.kubectl(&["delete", "namespace", ns, "--wait=false"]);
    ensure!(out.success(), "{out}");
    Ok(())
}

/// What `up` may change on the host and `down` must restore, each part as normalised text.
#[derive(Debug, PartialEq)]
struct HostSnapshot(BTreeMap<&'static str, String>);

/// Directories the node or its runtime would create when not kept in the node's namespace.
const PATHS: &[&str] = &[
    "/run/containerd",
    "/run/netns",
    "/run/nri",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/var/run/kubernetes",
    "/etc/cni",
    "/etc/cdi",
    "/etc/containerd",
    "/etc/kubernetes",
    "/opt/cni",
    "/opt/containerd",
];

const SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

impl HostSnapshot {
    fn take() -> anyhow::Result<Self> {
        let mut parts = BTreeMap::new();
        parts.insert("processes", cluster_processes()?);
        parts.insert("mounts", mounts()?);
        parts.insert("links", sh("ip", &["-o", "link"], "iproute2")?);
        let addrs = sh("ip", &["-o", "addr"], "iproute2")?;
        // Lifetimes of dynamic addresses count down.
        let addrs = addrs
            .lines()
            .map(|l| l.split("valid_lft").next().unwrap_or(l).trim_end())
            .collect::<Vec<_>>()
            .join("\n");
        parts.insert("addresses", addrs);
        parts.insert(
            "routes",
            sh("ip", &["-4", "route", "show", "table", "all"], "iproute2")?
                + &sh("ip", &["-6", "route", "show", "table", "all"], "iproute2")?,
        );
        parts.insert("iptables", rules(&sh("iptables-save", &[], "iptables")?));
        parts.insert("ip6tables", rules(&sh("ip6tables-save", &[], "iptables")?));
        parts.insert("nftables", sh("nft", &["list", "tables"], "nftables")?);
        let mut paths: Vec<String> = PATHS
            .iter()
            .filter(|p| Path::new(p).exists())
            .map(|p| p.to_string())
            .collect();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").context("/sys/fs/cgroup")? {
            let hierarchy = hierarchy?.path();
            for name in ["runnel", "kubepods"] {
                if hierarchy.join(name).exists() {
                    paths.push(hierarchy.join(name).display().to_string());
                }
            }
        }
        parts.insert("paths", paths.join("\n"));
        let sysctls = SYSCTLS
            .iter()
            .map(|s| {
                let value = std::fs::read_to_string(Path::new("/proc/sys").join(s));
                format!("{s} = {}", value.as_deref().unwrap_or("(none)").trim())
            })
            .collect::<Vec<_>>()
            .join("\n");
        parts.insert("sysctls", sysctls);
        Ok(HostSnapshot(parts))
    }

    fn assert_same(&self, after: &HostSnapshot) {
        let mut report = String::new();
        for (part, before) in &self.0 {
            let after = after.0.get(part).map_or("", String::as_str);
            if before != after {
                let b: Vec<&str> = before.lines().collect();
                let a: Vec<&str> = after.lines().collect();
                report.push_str(&format!("--- {part}\n"));
                for line in b.iter().filter(|l| !a.contains(l)) {
                    report.push_str(&format!("  gone:  {line}\n"));
                }
                for line in a.iter().filter(|l| !b.contains(l)) {
                    report.push_str(&format!("  added: {line}\n"));
                }
            }
        }
        assert!(
            report.is_empty(),
            "the host differs after `runnel-cluster down` from before `up`:\n{report}"
        );
    }
}

/// Names of the processes that belong to the cluster: those whose command line names its state
/// directory (the daemons, shims, the provisioner and its kubectl watches) and those in its
/// cgroups (containers). Other processes come and go on a shared host.
fn cluster_processes() -> anyhow::Result<String> {
    let dir = local_cluster::cluster_dir().display().to_string();
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc").context("/proc")? {
        let path = entry?.path();
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cgroup = std::fs::read_to_string(path.join("cgroup")).unwrap_or_default();
        let ours = cmdline.contains(&dir) || cgroup.lines().any(|l| l.contains(":/runnel"));
        if ours {
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            names.push(format!("{} {}", name.trim(), cmdline.trim()));
        }
    }
    names.sort();
    Ok(names.join("\n"))
}

/// Mount points with their file system and source, sorted.
fn mounts() -> anyhow::Result<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("mountinfo")?;
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| {
            let point = l.split(' ').nth(4)?;
            let rest = l.split(" - ").nth(1)?;
            Some(format!("{point} {rest}"))
        })
        .collect();
    mounts.sort();
    Ok(mounts.join("\n"))
}

/// iptables-save output without comments and packet counters.
fn rules(save: &str) -> String {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a host tool; a missing one fails with the package that brings it.
fn sh(program: &str, args: &[&str], package: &str) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| {
        format!("{program} is missing: apt-get install -y --no-install-recommends {package}")
    })?;
    ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

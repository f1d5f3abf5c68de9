//! One OpenTelemetry resource per traced process, read from /proc: the service name the process
//! would have given itself, and what identifies the process.

use std::{fs, path::Path, sync::Arc};

use foldhash::HashMap;

use super::model::{AttrValue, ProcessResource};

/// Interpreters whose script (or jar, or module) names the service better than the binary.
const INTERPRETERS: &[&str] = &[
    "python", "node", "java", "ruby", "perl", "php", "bun", "deno",
];

/// What /proc says about a process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessFacts {
    pub pid: u32,
    pub exe_path: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The command name the kernel reported at exec: the name of last resort, when the process
    /// was gone before /proc could be read (a short-lived client).
    pub comm: Option<String>,
}

impl ProcessFacts {
    pub fn read(pid: u32) -> Self {
        let split = |bytes: Vec<u8>| -> Vec<String> {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        };
        let env = split(fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
            .into_iter()
            .filter(|kv| kv.starts_with("OTEL_"))
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        Self {
            pid,
            exe_path: fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            args: split(fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()),
            env,
            comm: None,
        }
    }

    fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    fn exe_name(&self) -> Option<String> {
        let from_exe = self
            .exe_path
            .as_deref()
            .map(|p| p.trim_end_matches(" (deleted)"))
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned());
        from_exe
            .or_else(|| {
                self.args
                    .first()
                    .and_then(|a| Path::new(a).file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .or_else(|| self.comm.clone())
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `k=v,k2=v2`, values percent-encoded.
pub fn parse_resource_attributes(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The service name: the process's own OpenTelemetry settings first, then the script or jar
/// an interpreter runs, then the executable.
pub fn service_name(facts: &ProcessFacts) -> String {
    if let Some(name) = facts.env("OTEL_SERVICE_NAME") {
        return name.trim().to_owned();
    }
    if let Some(attrs) = facts.env("OTEL_RESOURCE_ATTRIBUTES")
        && let Some((_, v)) = parse_resource_attributes(attrs)
            .into_iter()
            .find(|(k, v)| k == "service.name" && !v.is_empty())
    {
        return v;
    }
    let exe = facts
        .exe_name()
        .unwrap_or_else(|| format!("unknown_service:{}", facts.pid));
    if INTERPRETERS.iter().any(|i| exe.starts_with(i))
        && let Some(script) = interpreted_program(&exe, &facts.args)
    {
        return script;
    }
    exe
}

/// `python3 app.py` → `app`, `python -m mypkg.server` → `mypkg.server`,
/// `java -jar orders.jar` → `orders`, `node server.js` → `server`.
fn interpreted_program(exe: &str, args: &[String]) -> Option<String> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-m" if exe.starts_with("python") => return it.next().cloned(),
            "-jar" if exe.starts_with("java") => return it.next().map(|j| stem(j)),
            "-c" | "-e" | "--eval" => return None,
            // Options that take a value.
            "-cp" | "-classpath" | "--class-path" | "-W" | "-X" | "--require" | "-r" => {
                it.next();
            }
            a if a.starts_with('-') => {}
            a => {
                // A Java main class: keep its simple name.
                if exe.starts_with("java") && !a.ends_with(".java") {
                    return Some(a.rsplit('.').next().unwrap_or(a).to_owned());
                }
                return Some(stem(a));
            }
        }
    }
    None
}

fn stem(path: &str) -> String {
    let file = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned());
    match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_owned(),
        _ => file,
    }
}

pub fn build_resource(facts: &ProcessFacts, host_name: &str) -> ProcessResource {
    let service = service_name(facts);
    let mut attributes: Vec<(String, AttrValue)> = Vec::new();
    // The process's own resource attributes first; ours override identity keys below.
    if let Some(extra) = facts.env("OTEL_RESOURCE_ATTRIBUTES") {
        for (k, v) in parse_resource_attributes(extra) {
            if k != "service.name" {
                attributes.push((k, AttrValue::Str(v)));
            }
        }
    }
    let mut set = |k: &str, v: AttrValue| {
        attributes.retain(|(existing, _)| existing != k);
        attributes.push((k.to_owned(), v));
    };
    set("service.name", AttrValue::Str(service.clone()));
    set("process.pid", AttrValue::Int(facts.pid as i64));
    if let Some(name) = facts.exe_name() {
        set("process.executable.name", AttrValue::Str(name));
    }
    if let Some(path) = &facts.exe_path {
        set("process.executable.path", AttrValue::Str(path.clone()));
    }
    set("host.name", AttrValue::Str(host_name.to_owned()));
    set("telemetry.sdk.name", AttrValue::Str("periscope".into()));
    set("telemetry.sdk.language", AttrValue::Str("rust".into()));
    set(
        "telemetry.sdk.version",
        AttrValue::Str(env!("CARGO_PKG_VERSION").into()),
    );
    ProcessResource {
        service_name: service,
        pid: facts.pid,
        attributes,
    }
}

/// Resources by pid, read once per process (and again after it execs another program).
pub struct ResourceCache {
    by_pid: HashMap<u32, Arc<ProcessResource>>,
    /// Command names reported at exec, until the process exits (see [`ProcessFacts::comm`]).
    exec_names: HashMap<u32, String>,
    host_name: String,
}

/// Exec'd processes whose names are kept; beyond it (exits lost) the table starts over.
const MAX_EXEC_NAMES: usize = 65536;

impl ResourceCache {
    pub fn new() -> Self {
        Self {
            by_pid: HashMap::default(),
            exec_names: HashMap::default(),
            host_name: host_name(),
        }
    }

    /// The process started another program, named `comm`: its resource is read again.
    pub fn on_exec(&mut self, pid: u32, comm: Option<String>) {
        self.by_pid.remove(&pid);
        match comm {
            Some(comm) => {
                if self.exec_names.len() >= MAX_EXEC_NAMES {
                    self.exec_names.clear();
                }
                self.exec_names.insert(pid, comm);
            }
            None => {
                self.exec_names.remove(&pid);
            }
        }
    }

    pub fn get(&mut self, pid: u32) -> Arc<ProcessResource> {
        self.entry(pid).clone()
    }

    /// Read the process's resource now unless it is known already.
    pub fn note(&mut self, pid: u32) {
        self.entry(pid);
    }

    fn entry(&mut self, pid: u32) -> &Arc<ProcessResource> {
        let host = &self.host_name;
        let exec_names = &self.exec_names;
        self.by_pid.entry(pid).or_insert_with(|| {
            let mut facts = ProcessFacts::read(pid);
            facts.comm = exec_names.get(&pid).cloned();
            Arc::new(build_resource(&facts, host))
        })
    }

    /// The process exited.
    pub fn forget(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
        self.exec_names.remove(&pid);
    }
}

impl Default for ResourceCache {
    fn default() -> Self {
        Self::new()
    }
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(exe: &str, args: &[&str], env: &[(&str, &str)]) -> ProcessFacts {
        ProcessFacts {
            pid: 7,
            exe_path: Some(exe.to_owned()),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            comm: None,
        }
    }

    #[test]
    fn a_process_gone_before_proc_is_read_is_named_by_its_exec() {
        // A short-lived client: it exec'd, then exited before its /proc entry was read.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut cache = ResourceCache::new();
        cache.on_exec(pid, Some("mariadb".into()));
        let resource = cache.get(pid);
        let attr = |key: &str| {
            resource
                .attributes
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        };
        assert_eq!(attr("service.name").as_deref(), Some("mariadb"));
        // Without the exec's name there is nothing better than the pid.
        cache.forget(pid);
        let unnamed = cache.get(pid);
        assert!(
            unnamed.attributes.iter().any(|(k, v)| *k == "service.name"
                && v.as_str() == Some(&format!("unknown_service:{pid}"))),
            "{unnamed:?}"
        );
    }

    #[test]
    fn service_name_rules() {
        let py = "/usr/bin/python3.11";
        assert_eq!(service_name(&facts(py, &["python3", "app.py"], &[])), "app");
        assert_eq!(
            service_name(&facts(
                py,
                &["python3", "-u", "/srv/shop/api.py", "--port", "1"],
                &[]
            )),
            "api"
        );
        assert_eq!(
            service_name(&facts(py, &["python3", "-m", "http.server", "8000"], &[])),
            "http.server"
        );
        assert_eq!(
            service_name(&facts(py, &["python3", "-c", "print()"], &[])),
            "python3.11"
        );
        let java = "/usr/lib/jvm/java-17/bin/java";
        assert_eq!(
            service_name(&facts(
                java,
                &["java", "-Xmx1g", "-jar", "/o/orders.jar"],
                &[]
            )),
            "orders"
        );
        assert_eq!(
            service_name(&facts(
                java,
                &["java", "-cp", "x.jar", "com.shop.Cart"],
                &[]
            )),
            "Cart"
        );
        assert_eq!(
            service_name(&facts("/usr/bin/node", &["node", "server.js"], &[])),
            "server"
        );
        assert_eq!(
            service_name(&facts("/usr/sbin/nginx", &["nginx: worker"], &[])),
            "nginx"
        );
        assert_eq!(
            service_name(&facts(
                py,
                &["python3", "app.py"],
                &[("OTEL_SERVICE_NAME", "checkout")]
            )),
            "checkout"
        );
        assert_eq!(
            service_name(&facts(
                py,
                &["python3", "app.py"],
                &[("OTEL_RESOURCE_ATTRIBUTES", "team=a,service.name=cart%20svc")]
            )),
            "cart svc"
        );
    }

    #[test]
    fn resource_carries_process_identity_and_user_attributes() {
        let f = facts(
            "/usr/sbin/nginx",
            &["nginx"],
            &[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,process.pid=1",
            )],
        );
        let r = build_resource(&f, "h1");
        let get = |k: &str| {
            r.attributes
                .iter()
                .find(|(a, _)| a == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("service.name"), Some(AttrValue::Str("nginx".into())));
        assert_eq!(get("process.pid"), Some(AttrValue::Int(7)));
        assert_eq!(get("host.name"), Some(AttrValue::Str("h1".into())));
        assert_eq!(
            get("deployment.environment"),
            Some(AttrValue::Str("prod".into()))
        );
        assert_eq!(
            r.attributes
                .iter()
                .filter(|(k, _)| k == "process.pid")
                .count(),
            1
        );
    }
}

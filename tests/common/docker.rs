//! A private Docker daemon for the docker source tests: the system's
//! `dockerd` (Debian's docker.io) started as root in a directory of its own
//! under /tmp (data root, exec root, pid file, API socket), with a one-file
//! image `bb` imported from the static busybox. Containers are run with
//! `/usr/bin/docker -H unix://SOCKET` (not whatever `docker` comes first in
//! PATH), detached, without a network.
//!
//! Nothing is skipped: if dockerd cannot start, the test fails with the
//! reason and dockerd's log. On drop the containers are removed, dockerd is
//! stopped by its pid file, anything left of it (containerd, shims,
//! container processes) is killed, its mounts are undone and the directory
//! is removed, so that a test leaves no dockerd and no mount behind.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Docker CLI of the docker.io package (another one may come first in
/// PATH).
pub const DOCKER: &str = "/usr/bin/docker";
/// The daemon of the docker.io package.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The static busybox the image is made of (busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";
/// The name of the image every container runs.
pub const IMAGE: &str = "bb";

/// How long dockerd gets to answer `/_ping`, and to exit on SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running dockerd of the test's own; stopped and cleaned up on drop.
pub struct PrivateDockerd {
    /// /tmp/lcdk-XXXXXX: short, for the socket path limits.
    dir: PathBuf,
    /// The dockerd process (a child, so that it is reaped).
    child: Option<Child>,
}

impl PrivateDockerd {
    /// Starts dockerd in a new directory, waits until its API answers and
    /// imports the busybox image.
    pub fn start() -> PrivateDockerd {
        for program in [DOCKER, DOCKERD, BUSYBOX] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the docker tests need the docker.io and busybox-static packages (see .ci/run)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("lcdk-")
            .tempdir_in("/tmp")
            .expect("temporary directory for dockerd")
            .keep();
        for sub in ["data", "exec", "cli"] {
            std::fs::create_dir_all(dir.join(sub)).expect("dockerd directories");
        }
        let mut dockerd = PrivateDockerd { dir, child: None };
        dockerd.spawn();
        dockerd.import_image();
        dockerd
    }

    /// The directory everything of this dockerd is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API socket (`socket = ...` of a docker source).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Where the json-file logs are: `<data-root>/containers`.
    pub fn containers_root(&self) -> PathBuf {
        self.dir.join("data/containers")
    }

    /// The json-file log of the container with the full id `id`.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.containers_root()
            .join(id)
            .join(format!("{id}-json.log"))
    }

    /// dockerd's own log (its standard output and error, all runs).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("dockerd.log")).unwrap_or_default())
            .into_owned()
    }

    /// The last `lines` lines of dockerd's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The pid in dockerd's pid file, if there is one.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("dockerd.pid"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// Starts dockerd on this directory and waits for `/_ping`.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("dockerd log file");
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--live-restore",
                "--log-level=info",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {DOCKERD}: {error}"));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().expect("poll dockerd"))
            {
                self.child = None;
                panic!(
                    "dockerd exited with {status} before answering /_ping on {}; its log:\n{}",
                    self.socket().display(),
                    self.log_tail(40)
                );
            }
            if self.ping() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer /_ping on {} within {START_TIMEOUT:?}; its log:\n{}",
                self.socket().display(),
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `GET /_ping` on the socket answers 200 `OK`.
    pub fn ping(&self) -> bool {
        let Ok(mut stream) = UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut response = String::new();
        if stream.read_to_string(&mut response).is_err() {
            return false;
        }
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
    }

    /// Imports the busybox image as `bb` (a `sh` and the applets the tests
    /// use, all links to the one static binary).
    fn import_image(&self) {
        let root = self.dir.join("img");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("image directory");
        std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
        for applet in [
            "sh", "echo", "usleep", "sleep", "head", "tr", "cat", "seq", "yes", "true",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tar");
        let import = self
            .command()
            .args(["import", "-", IMAGE])
            .stdin(tar.stdout.take().expect("tar output"))
            .output()
            .expect("run docker import");
        assert!(
            tar.wait().expect("tar").success(),
            "tar of the image failed"
        );
        assert!(
            import.status.success(),
            "docker import failed: {}\ndockerd log:\n{}",
            String::from_utf8_lossy(&import.stderr),
            self.log_tail(20)
        );
    }

    /// A `docker -H unix://SOCKET` command (its own CLI config directory).
    pub fn command(&self) -> Command {
        let mut command = Command::new(DOCKER);
        command
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()));
        command
    }

    /// Runs `docker ARGS`, failing the test if it fails; its output.
    pub fn docker(&self, args: &[&str]) -> Output {
        let output = self
            .command()
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {DOCKER}: {error}"));
        assert!(
            output.status.success(),
            "docker {args:?} failed: {}\ndockerd log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log_tail(20)
        );
        output
    }

    /// `docker run -d --network none --name NAME [--label K=V]...
    /// [--log-opt K=V]... bb sh -c SCRIPT`; the container's full id.
    pub fn run(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        log_opts: &[(&str, &str)],
        script: &str,
    ) -> String {
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "--network".into(),
            "none".into(),
            "--name".into(),
            name.into(),
        ];
        for (key, value) in labels {
            args.push("--label".into());
            args.push(format!("{key}={value}"));
        }
        for (key, value) in log_opts {
            args.push("--log-opt".into());
            args.push(format!("{key}={value}"));
        }
        args.extend([IMAGE.into(), "sh".into(), "-c".into(), script.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.docker(&args);
        String::from_utf8(output.stdout)
            .expect("container id")
            .trim()
            .to_string()
    }

    /// `docker stop -t SECONDS NAME` (busybox sh as pid 1 ignores SIGTERM:
    /// it is killed after the timeout).
    pub fn stop(&self, name: &str, seconds: u32) {
        self.docker(&["stop", "-t", &seconds.to_string(), name]);
    }

    /// `docker rm -f NAME`.
    pub fn rm_f(&self, name: &str) {
        self.docker(&["rm", "-f", name]);
    }

    /// `docker inspect -f FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        let output = self.docker(&["inspect", "-f", format, name]);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Waits until the container has exited (its writer is done).
    pub fn wait_exited(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.inspect(name, "{{.State.Status}}");
            if status == "exited" || status == "dead" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {name} still {status} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `docker logs NAME`: (standard output, standard error).
    pub fn logs(&self, name: &str) -> (String, String) {
        let output = self.docker(&["logs", name]);
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Stops dockerd (SIGTERM by its pid file, waits for it to exit) and
    /// starts it again on the same directories. With `--live-restore`
    /// running containers go on, and their logs are taken up again.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// SIGKILL to the pid in the pid file, and reaps it: dockerd crashes,
    /// leaving its containerd, shims and containers (and its mounts) for
    /// the drop to clean up.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = self.pid().unwrap_or(child.id() as i32);
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = child.wait();
    }

    /// Processes and mounts this dockerd left behind (both empty once it
    /// is dropped): command lines naming its directory or in a cgroup of
    /// one of its containers, and mount points under its directory.
    pub fn leftovers(&self) -> (Vec<String>, Vec<String>) {
        let processes = self
            .leftover_pids()
            .into_iter()
            .map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!(
                    "{pid}: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                )
            })
            .collect();
        (processes, self.mounts())
    }

    /// Stops dockerd (SIGTERM, waits for it) and leaves it stopped, until
    /// [`start_again`](Self::start_again).
    pub fn stop_daemon(&mut self) {
        self.terminate();
    }

    /// Starts dockerd again after [`stop_daemon`](Self::stop_daemon).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// SIGTERM to the pid in the pid file; waits for dockerd to exit.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = self.pid().unwrap_or(child.id() as i32);
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait().expect("poll dockerd").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "dockerd did not exit within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A dockerd that exits removes its socket; a stale one would be
        // pinged by the next start.
        let _ = std::fs::remove_file(self.socket());
    }

    /// Ids of the containers this dockerd ever created (their directories).
    fn container_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.containers_root())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Processes left of this dockerd: its containerd and shims (their
    /// command lines name this directory) and the processes of its
    /// containers (their cgroup names a container id of this dockerd).
    fn leftover_pids(&self) -> Vec<i32> {
        let dir = self.dir.to_string_lossy().into_owned();
        let ids = self.container_ids();
        let me = std::process::id() as i32;
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            if cmdline.contains(&dir) || ids.iter().any(|id| cgroup.contains(id.as_str())) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Mount points under this directory, deepest first.
    fn mounts(&self) -> Vec<String> {
        let dir = self.dir.to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&dir))
            .map(str::to_string)
            .collect();
        points.sort_by_key(|point| std::cmp::Reverse(point.len()));
        points
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Containers first: with --live-restore they outlive dockerd.
            if let Ok(output) = self.command().args(["ps", "-aq"]).output() {
                let ids = String::from_utf8_lossy(&output.stdout).into_owned();
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let _ = self.command().args(["rm", "-f"]).args(&ids).output();
                }
            }
            if let Some(mut child) = self.child.take() {
                let pid = self.pid().unwrap_or(child.id() as i32);
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + STOP_TIMEOUT;
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for _ in 0..50 {
            let pids = self.leftover_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: as above; these are processes this dockerd started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for _ in 0..5 {
            let points = self.mounts();
            if points.is_empty() {
                break;
            }
            for point in points {
                let Ok(point) = std::ffi::CString::new(point) else {
                    continue;
                };
                // SAFETY: a valid C string; umount2 has no other
                // memory-safety preconditions.
                unsafe { libc::umount2(point.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let left = self.mounts();
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "{}: still mounted, not removed: {left:?}",
                self.dir.display()
            );
        }
    }
}

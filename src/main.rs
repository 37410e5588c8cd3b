//! `fanfare`: argv → Config → shards. No broker logic lives here.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};

use fanfare::admin::{self, Admin, shards::ShardRequests};
use fanfare::auth::{Policy, SharedPolicy};
use fanfare::bridge::BridgeLink;
use fanfare::cluster::ClusterLink;
use fanfare::config::{Config, KtlsMode, LogFormat, Reload, SharedConfig, parse_listener};
use fanfare::metrics::Metrics;
use fanfare::net::instance_lock::InstanceLock;
use fanfare::net::ktls::{self, KtlsSupport};
use fanfare::net::listener::{ListenerKind, bind_reuseport};
use fanfare::net::sd_notify::State;
use fanfare::net::sys::{self, Signal};
use fanfare::net::takeover::{Handed, Handover, Role};
use fanfare::service::Service;
use fanfare::shard::mailbox::Mailboxes;
use fanfare::shard::verifier::Verifiers;
use fanfare::shard::{self, AddressBook, AuthSetup, Heartbeats, ShardSetup, ShardStore};
use fanfare::store::Store;
use fanfare::tls::{SharedTls, TlsServers};

#[global_allocator]
static GLOBAL: fanfare::net::allocator::Allocator = fanfare::net::allocator::Allocator;

const USAGE: &str = "\
fanfare: an MQTT broker for massive fan-out over WebSockets

Usage: fanfare [OPTIONS]
       fanfare passwd [-c | -D | -b] FILE USER [PASSWORD]   (see fanfare passwd --help)
       fanfare check-config FILE   check a configuration file, print the effective settings

Options:
  --config FILE      read settings from a TOML file (flags below override it)
  --tcp ADDR|off     MQTT over TCP listener          [default: 127.0.0.1:1883]
  --ws ADDR|off      MQTT over WebSocket listener    [default: 127.0.0.1:8080]
  --ws-path PATH     HTTP path of the WebSocket upgrade [default: /mqtt]
  --mqtts ADDR|off   MQTT over TLS listener          [default: off]
  --wss ADDR|off     MQTT over WebSocket over TLS, and https [default: off]
  --admin ADDR|off   operations listener: metrics, health, admin API [default: 127.0.0.1:9090]
  --tls-cert FILE    PEM certificate chain of the TLS listeners
  --tls-key FILE     PEM private key of that certificate
  --shards N         shard threads, one per core     [default: number of cores]
  --log-level LEVEL  error, warn, info, debug or trace [default: info]
  --log-format FMT   text, or json for one JSON object per line [default: text]
  --data-dir DIR     keep retained messages in DIR across restarts [default: in memory]
  --nats URL         join a cluster through this NATS server (repeatable; replaces
                     [cluster] nats)                 [default: no cluster]
  --recover          start even if a file in the data directory is corrupt, keeping what
                     is readable
  --takeover         replace the broker running on the same addresses: take its listening
                     sockets, serve, then let it drain its clients over drain_s and exit
  -h, --help         print this help
  -V, --version      print the version
";

fn main() -> ExitCode {
    // `fanfare passwd ...` edits a password file and starts no broker.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "passwd")
    {
        return fanfare::auth::passwd_cli::main(std::env::args_os().skip(2));
    }
    // `fanfare check-config FILE` checks a configuration file and starts no broker.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "check-config")
    {
        return fanfare::check_config::main(std::env::args_os().skip(2));
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Logged) => ExitCode::FAILURE,
        Err(Failure::Plain(e)) => {
            eprintln!("fanfare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Why the broker stopped with an error, and whether it was logged already.
enum Failure {
    /// Printed as one plain line: before the logger, or with text logs, where a person reads it.
    Plain(anyhow::Error),
    /// Written as a JSON log record, so that a log collector reads every line of stderr.
    Logged,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Plain(e)
    }
}

/// The flags that set a configuration key, and the key each sets (as errors name it).
const FLAG_KEYS: [(&str, &str); 13] = [
    ("--tcp", "tcp"),
    ("--ws", "ws"),
    ("--ws-path", "ws_path"),
    ("--mqtts", "mqtts"),
    ("--wss", "wss"),
    ("--admin", "admin"),
    ("--tls-cert", "tls.cert_file"),
    ("--tls-key", "tls.key_file"),
    ("--shards", "shards"),
    ("--log-level", "log_level"),
    ("--log-format", "log_format"),
    ("--data-dir", "data_dir"),
    ("--nats", "cluster.nats"),
];

/// What the command line asks for: a file, and the flags that override its keys.
struct Args {
    config_file: Option<String>,
    /// (flag, the key it sets, value), in the order given.
    overrides: Vec<(&'static str, &'static str, String)>,
    /// `--takeover`: replace the broker holding these addresses instead of refusing to start.
    takeover: bool,
    /// `--recover`: load what is readable of a corrupt data directory instead of stopping.
    recover: bool,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut args = Args {
        config_file: None,
        overrides: Vec::new(),
        takeover: false,
        recover: false,
    };
    while let Some(arg) = parser.next()? {
        let flag_key = match arg {
            Long(name) => FLAG_KEYS.iter().find(|(flag, _)| flag[2..] == *name),
            _ => None,
        };
        if let Some(&(flag, key)) = flag_key {
            args.overrides.push((flag, key, parser.value()?.string()?));
            continue;
        }
        match arg {
            Long("config") => args.config_file = Some(parser.value()?.string()?),
            Long("takeover") => args.takeover = true,
            Long("recover") => args.recover = true,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("fanfare {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Some(args))
}

/// The file, then the flags over it, validated: at start-up, and again on SIGHUP.
fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config_file {
        Some(path) => Config::read_file(path)?,
        None => Config::default(),
    };
    // `--nats` given replaces the file's list: the flags name every server.
    if args.overrides.iter().any(|(flag, _, _)| *flag == "--nats") {
        config.cluster.nats.clear();
    }
    for (flag, _, value) in &args.overrides {
        let value = value.clone();
        match *flag {
            "--tcp" => config.tcp = parse_listener(flag, &value)?,
            "--ws" => config.ws = parse_listener(flag, &value)?,
            "--ws-path" => config.ws_path = value,
            "--mqtts" => config.mqtts = parse_listener(flag, &value)?,
            "--wss" => config.wss = parse_listener(flag, &value)?,
            "--admin" => config.admin.listen = parse_listener(flag, &value)?,
            "--tls-cert" => config.tls.cert_file = Some(value.into()),
            "--tls-key" => config.tls.key_file = Some(value.into()),
            "--shards" => {
                config.shards = value
                    .parse()
                    .with_context(|| format!("--shards: `{value}` is not a number"))?
            }
            "--log-format" => config.log_format = LogFormat::parse(flag, &value)?,
            "--data-dir" => config.persistence.data_dir = Some(value.into()),
            "--nats" => config.cluster.nats.push(value),
            _ => config.log_level = value,
        }
    }
    // A value a flag set is wrong: the error names the flag, not the key it set.
    config.validate().map_err(|error| {
        args.overrides
            .iter()
            .fold(error, |error, (flag, key, _)| error.from_flag(key, flag))
    })?;
    Ok(config)
}

/// Per shard, its listening sockets (one per listener, joined with `SO_REUSEPORT`), and the
/// lines that announce each listener with the port it got.
type Listeners = Vec<Vec<(ListenerKind, std::net::TcpListener)>>;

/// Whether TLS connections hand their keys to the kernel after the handshake: `[tls] ktls`,
/// then the kernel's answer to the probe; the error says why not, for the log.
fn kernel_tls(mode: KtlsMode) -> Result<KtlsSupport, ktls::KtlsUnavailable> {
    match mode {
        KtlsMode::Off => Err(ktls::KtlsUnavailable(
            "kernel TLS is off ([tls] ktls = \"off\")".to_owned(),
        )),
        KtlsMode::Auto => ktls::probe(),
    }
}

/// The listening sockets a successor would take over (duplicates of the shards' own).
type Offer = Vec<Handed>;
/// Each listener's announcement (`listening tcp 127.0.0.1:1883`), and whether it is TLS.
type Announced = Vec<(String, bool)>;

/// Binds every listener, or takes it from the broker handing over (`--takeover`): the same
/// sockets, spread over this broker's shards, with more joining their group if it has more
/// shards than that one had.
fn bind_listeners(
    config: &Config,
    mut handover: Option<&mut Handover>,
) -> anyhow::Result<(Listeners, Announced, Offer)> {
    let mut per_shard: Listeners = (0..config.shards).map(|_| Vec::new()).collect();
    let mut announced = Vec::new();
    let mut offer = Vec::new();
    for (kind, addr) in [
        (ListenerKind::Tcp, config.tcp),
        (ListenerKind::Ws, config.ws),
        (ListenerKind::Mqtts, config.mqtts),
        (ListenerKind::Wss, config.wss),
    ] {
        let Some(addr) = addr else { continue };
        let mut listeners = match handover.as_deref_mut() {
            Some(handover) => handover.take_listeners(kind, addr)?,
            None => Vec::new(),
        };
        let more = config.shards.saturating_sub(listeners.len());
        listeners.extend(
            bind_reuseport(addr, more)
                .with_context(|| format!("cannot listen for {} on {addr}", kind.name()))?,
        );
        let bound = listeners[0].local_addr()?;
        for listener in &listeners {
            let fd = listener.try_clone()?.into();
            offer.push(Handed {
                role: Role::Listener(kind),
                addr: bound,
                fd,
            });
        }
        let line = match kind {
            ListenerKind::Tcp | ListenerKind::Mqtts => format!("listening {} {bound}", kind.name()),
            ListenerKind::Ws | ListenerKind::Wss => {
                format!("listening {} {bound}{}", kind.name(), config.ws_path)
            }
        };
        announced.push((line, kind.tls()));
        for (index, listener) in listeners.into_iter().enumerate() {
            per_shard[index % config.shards].push((kind, listener));
        }
    }

    Ok((per_shard, announced, offer))
}

/// SIGHUP: reads the configuration file again, with the command line's flags over it, and
/// with it the certificate, key, password, ACL and JWT key files its `[tls]` and `[auth]` name.
/// The keys that can change live are applied; the others keep their running values, and are
/// named. Each shard takes the new policy at its next turn; subscriptions it no longer allows
/// are removed. Everything is read before anything changes: a file that does not load or
/// validate is logged, and the running configuration, certificates and policy all stay.
fn reload(
    args: &Args,
    live_config: &SharedConfig,
    tls: Option<&SharedTls>,
    kernel_tls: bool,
    auth: &AuthSetup,
    admin: Option<&Admin>,
) {
    let (_, running) = live_config.current();
    let file = match &args.config_file {
        None => {
            log::info!("SIGHUP received: no --config file, reading the TLS and auth files again");
            (*running).clone()
        }
        Some(path) => match load_config(args) {
            Ok(file) => file,
            Err(e) => {
                log::error!(
                    "SIGHUP received: {path} not applied, keeping the running configuration: {e:#}"
                );
                return;
            }
        },
    };
    let reload = Reload::new(&running, &file);
    // New TLS connections get the new certificates, those established carry on.
    let servers = tls.map(|_| TlsServers::load(&reload.config.tls, kernel_tls));
    let servers = match servers.transpose() {
        Ok(servers) => servers,
        Err(e) => {
            log::error!(
                "SIGHUP received: TLS certificates not reloaded, keeping the old ones and the running configuration: {e}"
            );
            return;
        }
    };
    let generation = auth.generation.load(Ordering::Acquire) + 1;
    let policy = match Policy::load(&reload.config.auth, generation) {
        Ok(policy) => policy,
        Err(e) => {
            log::error!(
                "SIGHUP received: auth files not reloaded, keeping the old ones and the running configuration: {e}"
            );
            return;
        }
    };
    // The admin API's token: from the reloaded file's `admin_token_file`.
    let token = match (admin, &reload.config.admin.token_file) {
        (Some(_), Some(path)) => match admin::read_token(path) {
            Ok(token) => Some(token),
            Err(e) => {
                log::error!(
                    "SIGHUP received: admin token not reloaded, keeping the old one and the running configuration: {e}"
                );
                return;
            }
        },
        _ => None,
    };
    if let (Some(tls), Some(servers)) = (tls, servers) {
        tls.replace(servers);
        log::info!("SIGHUP received: TLS certificates reloaded");
    }
    auth.policy.replace(policy);
    auth.generation.store(generation, Ordering::Release);
    log::info!("SIGHUP received: password, ACL and JWT key files reloaded");
    if let Some(admin) = admin {
        admin.set_token(token);
        log::info!("SIGHUP received: admin token file reloaded");
    }
    if let Some(path) = &args.config_file {
        apply_config(path, &running, reload, live_config);
    }
}

/// Applies a reloaded configuration's live keys, and names those kept until a restart.
fn apply_config(path: &str, running: &Config, reload: Reload, live_config: &SharedConfig) {
    if !reload.kept.is_empty() {
        log::warn!(
            "SIGHUP received: {path}: {} cannot change while the broker runs, kept as they were until a restart",
            reload.kept.join(", ")
        );
    }
    if reload.applied.is_empty() {
        log::info!("SIGHUP received: {path} reloaded, no live setting changed");
        return;
    }
    if reload.config.log_level != running.log_level {
        fanfare::logging::set_level(&reload.config.log_level);
    }
    live_config.replace(reload.config);
    log::info!(
        "SIGHUP received: {path} reloaded, applied: {}",
        reload.applied.join(", ")
    );
}

/// The operations listener's socket (not in a `SO_REUSEPORT` group: one thread accepts), and
/// the line announcing it; `None` with `admin = "off"`.
fn bind_admin(
    config: &Config,
    handover: Option<&mut Handover>,
) -> anyhow::Result<Option<(std::net::TcpListener, String)>> {
    let Some(addr) = config.admin.listen else {
        return Ok(None);
    };
    let listener = match handover.and_then(|handover| handover.take_admin(addr)) {
        Some(listener) => listener,
        None => std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for admin on {addr}"))?,
    };
    let line = format!("listening admin {}", listener.local_addr()?);
    Ok(Some((listener, line)))
}

/// Starts the operations listener's threads, once the shards run.
fn start_admin(
    live_config: &Arc<SharedConfig>,
    listener: std::net::TcpListener,
    token: Option<Box<str>>,
    shards: Arc<ShardRequests>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    cluster: Option<Arc<ClusterLink>>,
) -> anyhow::Result<Arc<Admin>> {
    let (_, config) = live_config.current();
    let admin = Admin {
        settings: config.admin.clone(),
        token: RwLock::new(token),
        shards,
        metrics,
        ready,
        config: Arc::clone(live_config),
        started: std::time::Instant::now(),
        cluster,
    };
    admin::start(listener, admin).context("cannot start the admin listener's thread")
}

/// Claims the listening addresses; with `--takeover`, asks the broker holding them for its
/// sockets instead of refusing to start.
fn claim_addresses(
    listening: &[std::net::SocketAddr],
    takeover: bool,
) -> anyhow::Result<(InstanceLock, Option<Handover>)> {
    if !takeover {
        return Ok((InstanceLock::acquire(listening)?, None));
    }
    let (lock, handover) = InstanceLock::take_over(listening)?;
    match &handover {
        Some(handover) => log::info!(
            "--takeover: pid {} on {} hands over its listening sockets",
            handover.pid,
            handover.addr
        ),
        None => log::info!("--takeover: no broker holds these addresses; starting normally"),
    }
    Ok((lock, handover))
}

/// With `data_dir`: locks it, loads the retained messages and starts the store's writer.
fn open_store(
    config: &Config,
    recover: bool,
    mailboxes: &Arc<Mailboxes>,
) -> anyhow::Result<Option<Store>> {
    let persistence = &config.persistence;
    let Some(dir) = &persistence.data_dir else {
        if recover {
            bail!("--recover: no data directory to recover (set --data-dir or data_dir)");
        }
        return Ok(None);
    };
    let mailboxes = Arc::clone(mailboxes);
    let wake = Box::new(move |shard| mailboxes.wake(shard));
    let store = Store::open(
        dir,
        persistence.durability,
        persistence.store,
        config.shards,
        recover,
        wake,
    )?;
    Ok(Some(store))
}

/// Once this broker serves on the sockets handed over: tells the old broker to drain.
fn finish_takeover(handover: Handover) -> anyhow::Result<()> {
    let unused = handover.unused();
    if !unused.is_empty() {
        log::warn!(
            "--takeover: this configuration does not listen on {}: those stop with the old broker",
            unused.join(", ")
        );
    }
    let (pid, addr) = (handover.pid, handover.addr);
    handover
        .finish()
        .with_context(|| format!("takeover of {addr}: cannot tell pid {pid} to drain"))?;
    log::info!("took over from pid {pid}, which now drains its clients");
    Ok(())
}

/// A successor serves on the listening sockets: every shard stops accepting and ends its
/// connections over `drain_s`, then stops. SIGINT or SIGTERM meanwhile stop at once.
fn drain_shards(
    successor: u32,
    config: &Config,
    drain: &AtomicBool,
    stop: &AtomicBool,
    mailboxes: &Mailboxes,
    threads: Vec<std::thread::JoinHandle<()>>,
) -> anyhow::Result<()> {
    log::info!(
        "pid {successor} serves on the listening sockets now: draining the clients over {} s (drain_s)",
        config.drain_s
    );
    drain.store(true, Ordering::Release);
    for shard in 0..mailboxes.shard_count() {
        mailboxes.wake(shard);
    }
    while !threads.iter().all(|thread| thread.is_finished()) {
        let poll = std::time::Duration::from_millis(100);
        if let Some(Signal::Stop(signal)) = sys::wait_for_signal(Some(poll)) {
            log::info!("{signal} received while draining: closing the rest now");
            stop.store(true, Ordering::Release);
            for shard in 0..mailboxes.shard_count() {
                mailboxes.wake(shard);
            }
        }
    }
    for thread in threads {
        if thread.join().is_err() {
            bail!("a shard thread panicked");
        }
    }
    Ok(())
}

/// Tells every shard to stop, wakes it so it sees that at once, and waits for it to finish
/// closing its connections.
fn stop_shards(
    stop: &AtomicBool,
    mailboxes: &Mailboxes,
    threads: Vec<std::thread::JoinHandle<()>>,
) -> anyhow::Result<()> {
    stop.store(true, Ordering::Release);
    for shard in 0..mailboxes.shard_count() {
        mailboxes.wake(shard);
    }
    for thread in threads {
        if thread.join().is_err() {
            bail!("a shard thread panicked");
        }
    }
    Ok(())
}

/// Once the shards stopped: the NATS thread stores their persistent sessions' last images in
/// the cluster's bucket, so that another node resumes them as they were at the stop.
fn finish_cluster_sessions(link: &ClusterLink, settings: &fanfare::config::ClusterSettings) {
    if !link.figures.connected.load(Ordering::Relaxed) {
        log::warn!(
            "cluster: not connected to NATS at stop: the sessions' changes since their last write are not in the bucket"
        );
        return;
    }
    let wait = std::time::Duration::from_millis(settings.session_stop_write_ms.into());
    if link.finish_sessions(wait) {
        log::info!("cluster: the sessions' last changes are in the bucket");
    } else {
        log::warn!(
            "cluster: the bucket did not store every session's last changes within {} ms (session_stop_write_ms)",
            settings.session_stop_write_ms
        );
    }
}

/// Once the shards stopped: each bridge takes what they handed it into its queue (QoS 1: its
/// files) and ends.
fn stop_bridges(bridges: &[Arc<BridgeLink>], threads: Vec<std::thread::JoinHandle<()>>) {
    for link in bridges {
        link.request_stop();
    }
    for thread in threads {
        if thread.join().is_err() {
            log::error!("a bridge thread panicked");
        }
    }
}

fn run() -> Result<(), Failure> {
    // First, so that as little of the heap as possible is touched with huge pages on.
    let small_pages = sys::disable_transparent_huge_pages();
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    let config = load_config(&args)?;
    fanfare::logging::init(&config.log_level, config.log_format);
    let log_format = config.log_format;
    match serve(config, &args, small_pages) {
        Ok(()) => Ok(()),
        Err(e) if log_format == LogFormat::Json => {
            log::error!("{e:#}");
            Err(Failure::Logged)
        }
        Err(e) => Err(Failure::Plain(e)),
    }
}

/// Everything after the logger is set up: listen, start the shards, wait for a stop.
fn serve(config: Config, args: &Args, small_pages: std::io::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = small_pages {
        // Only memory is at stake: huge pages inflate RSS, they do not break anything.
        log::warn!("cannot turn transparent huge pages off: {e}; RSS will count whole 2 MiB pages");
    }

    // The certificates are read before anything listens: a bad file stops start-up, naming it.
    let tls_listening = config.mqtts.is_some() || config.wss.is_some();
    let kernel_tls = tls_listening.then(|| kernel_tls(config.tls.ktls));
    let kernel_support = kernel_tls
        .as_ref()
        .and_then(|kernel| kernel.as_ref().ok().copied());
    let tls = if tls_listening {
        let servers = TlsServers::load(&config.tls, kernel_support.is_some())?;
        Some(Arc::new(SharedTls::new(servers)))
    } else {
        None
    };
    // So are the password, ACL and JWT key files, and the admin API's token.
    let policy = Policy::load(&config.auth, 0)?;
    let admin_token = match &config.admin.token_file {
        Some(path) => Some(admin::read_token(path)?),
        None => None,
    };

    // Shards and the lock's threads inherit this mask: stop signals reach only the sigwait
    // below.
    sys::block_stop_signals().context("cannot block SIGINT/SIGTERM")?;
    // Claimed before binding: a second broker must not join the listening groups even for a
    // moment, or the kernel hands it connections that are reset when it exits.
    let listening: Vec<_> = [config.tcp, config.ws, config.mqtts, config.wss]
        .into_iter()
        .flatten()
        .collect();
    let (lock, mut handover) = claim_addresses(&listening, args.takeover)?;
    let mailboxes = Arc::new(Mailboxes::new(
        config.shards,
        config.limits.cross_shard_queue_len_max as usize,
    )?);
    // Loaded before anything listens: a client must never see the retained topics missing.
    let mut store = open_store(&config, args.recover, &mailboxes)?;
    let (per_shard, mut announced, mut offer) = bind_listeners(&config, handover.as_mut())?;
    let admin_listener = bind_admin(&config, handover.as_mut())?;
    if let Some((listener, line)) = &admin_listener {
        announced.push((line.clone(), false));
        offer.push(Handed {
            role: Role::Admin,
            addr: listener.local_addr()?,
            fd: listener.try_clone()?.into(),
        });
    }
    let drain = Arc::new(AtomicBool::new(false));
    let config = Arc::new(config);
    let live_config = Arc::new(SharedConfig::new(Arc::clone(&config)));
    let heartbeats = Arc::new(Heartbeats::new(config.shards));
    // Bridges: one thread each, connecting in the background like the cluster's client.
    let mut bridges = Vec::with_capacity(config.bridges.len());
    let mut bridge_threads = Vec::with_capacity(config.bridges.len());
    for settings in &config.bridges {
        let link = Arc::new(BridgeLink::new(settings, Arc::clone(&mailboxes)));
        let thread = fanfare::bridge::spawn(
            settings,
            &config.limits,
            &config.persistence,
            Arc::clone(&link),
        )?;
        bridge_threads.push(thread);
        log::info!(
            "bridge {}: to {} over MQTT {:?}, {} topic mappings",
            settings.name,
            settings.url,
            settings.protocol,
            settings.topics.len()
        );
        bridges.push(link);
    }
    let metrics = Arc::new(Metrics::new(config.shards).with_bridges(bridges.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    // Each admin connection has at most one question out per shard: that many fit a queue.
    let admin_questions = admin_listener.as_ref().map(|_| {
        let queue_len = config.admin.connections_max as usize;
        Arc::new(ShardRequests::new(Arc::clone(&mailboxes), queue_len))
    });
    let auth = AuthSetup {
        addresses: Arc::new(AddressBook::new(
            config.limits.connections_per_ip_max,
            config.limits.connect_rate_per_ip_max,
            config.trusted_proxies.clone(),
        )),
        policy: Arc::new(SharedPolicy::new(policy)),
        generation: Arc::new(AtomicU64::new(0)),
        verifiers: Verifiers::start(
            config.auth.verifier_threads,
            config.auth.verify_queue_max,
            config.shards,
            Arc::clone(&mailboxes),
        )
        .context("cannot start the password verifiers")?,
    };
    // Cluster mode: the NATS client's thread; it connects in the background, so the node
    // serves its own clients whether NATS is up or not.
    let cluster = if config.cluster.enabled() {
        let link = Arc::new(ClusterLink::new(Arc::clone(&mailboxes), &config.cluster));
        fanfare::cluster::spawn(&config.cluster, &config.limits, Arc::clone(&link))?;
        log::info!(
            "cluster: node {:?}, NATS {}, subjects under {:?}",
            config.cluster.node,
            config.cluster.nats.join(", "),
            config.cluster.subject_prefix
        );
        Some(link)
    } else {
        None
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    let mut store_handles = store
        .as_mut()
        .map(Store::take_handles)
        .unwrap_or_default()
        .into_iter();
    let mut store_sessions = store
        .as_mut()
        .map(Store::take_sessions)
        .unwrap_or_default()
        .into_iter();
    for (id, listeners) in per_shard.into_iter().enumerate() {
        let shard_store = store
            .as_ref()
            .zip(store_handles.next())
            .map(|(store, handle)| ShardStore {
                handle,
                loaded: Arc::clone(&store.loaded),
                sessions: store_sessions.next().unwrap_or_default(),
                durability: config.persistence.durability,
                interval: Duration::from_millis(config.persistence.durability_interval_ms.into()),
            });
        let setup = ShardSetup {
            id,
            auth: auth.clone(),
            config: live_config.clone(),
            mailboxes: mailboxes.clone(),
            stop: stop.clone(),
            drain: drain.clone(),
            listeners,
            metrics: metrics.clone(),
            heartbeats: heartbeats.clone(),
            tls: tls.clone(),
            kernel_tls: kernel_support,
            admin: admin_questions.clone(),
            store: shard_store,
            cluster: cluster.clone(),
            bridges: bridges.clone(),
        };
        threads.push(shard::spawn(setup, ready_tx.clone())?);
    }
    drop(ready_tx);
    for _ in 0..config.shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("{e}"),
            Err(_) => bail!("a shard thread ended during start-up"),
        }
    }
    if let Some(store) = store.as_mut() {
        store.serving();
    }
    for (line, tls) in &announced {
        println!("{line}");
        log::info!("{line}");
        if let (true, Some(mode)) = (tls, &kernel_tls) {
            match mode {
                Ok(support) => log::info!(
                    "{line}: kernel TLS (kTLS) after the handshake for {support}; other suites in user-space TLS"
                ),
                Err(why) => log::info!("{line}: user-space TLS: {why}"),
            }
        }
    }
    let admin = match (admin_listener, admin_questions) {
        (Some((listener, _)), Some(questions)) => Some(start_admin(
            &live_config,
            listener,
            admin_token,
            questions,
            Arc::clone(&metrics),
            Arc::clone(&ready),
            cluster.clone(),
        )?),
        _ => None,
    };
    ready.store(true, Ordering::Release);
    let mut service = Service::from_env(heartbeats);
    println!("ready");
    service.notify(State::Ready);
    log::info!(
        "fanfare {} ready with {} shards",
        env!("CARGO_PKG_VERSION"),
        config.shards
    );
    lock.offer(offer);
    if let Some(handover) = handover {
        finish_takeover(handover)?;
    }

    let signal = loop {
        match service.wait_for_signal() {
            Signal::Stop(signal) => break signal,
            Signal::HandedOver => match lock.successor() {
                Some(pid) => {
                    ready.store(false, Ordering::Release);
                    service.notify(State::Stopping);
                    drain_shards(pid, &config, &drain, &stop, &mailboxes, threads)?;
                    if let Some(link) = &cluster {
                        finish_cluster_sessions(link, &config.cluster);
                    }
                    stop_bridges(&bridges, bridge_threads);
                    if let Some(store) = store {
                        store.finish();
                    }
                    log::info!("drained and stopped");
                    return Ok(());
                }
                None => log::info!("SIGUSR2 received: no takeover under way, ignored"),
            },
            Signal::Reload => reload(
                args,
                &live_config,
                tls.as_deref(),
                kernel_support.is_some(),
                &auth,
                admin.as_deref(),
            ),
        }
    };
    log::info!("{signal} received: closing connections and stopping");
    service.notify(State::Stopping);
    ready.store(false, Ordering::Release);
    stop_shards(&stop, &mailboxes, threads)?;
    if let Some(link) = &cluster {
        finish_cluster_sessions(link, &config.cluster);
    }
    stop_bridges(&bridges, bridge_threads);
    if let Some(store) = store {
        store.finish();
    }
    log::info!("stopped");
    Ok(())
}

//! Command line → `Config`, and `Config` → the list of connections each worker opens.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde::Serialize;

use crate::codec::Version;
use crate::conn::parse_ip;
use crate::stats::PAYLOAD_HEADER_BYTES;
use crate::target::Target;
pub use crate::url::Transport;
use crate::url::{TlsFlags, endpoints, parse_url};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Conn,
    Fanout,
    Topics,
    Retained,
    Qos1,
    P2p,
}

/// How each worker's io_uring is set up. On loopback the broker's core runs the receivers'
/// TCP stack, including waking the load generator for every delivery: `defer` makes that
/// wake-up cheap (none while the worker runs, one when it sleeps), as a client on another
/// machine would cost the broker nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RingMode {
    /// `IORING_SETUP_DEFER_TASKRUN` with `SINGLE_ISSUER` (Linux 6.1), else `coop`.
    Defer,
    /// `IORING_SETUP_COOP_TASKRUN` (Linux 5.19): completions without an interrupt.
    Coop,
    /// No setup flags (monoio's default).
    Plain,
}

#[derive(Debug)]
pub struct Config {
    pub scenario: Scenario,
    /// The transport of every `--url` and `--pub-url`.
    pub transport: Transport,
    pub target: Target,
    pub workers: usize,
    /// Core each worker is pinned to, `cores[i % len]` of the process's allowed set; empty
    /// with `--no-pin` (or when the set is unknown): the scheduler places the workers.
    pub pin_cores: Vec<usize>,
    pub ring_mode: RingMode,
    pub subscribers: usize,
    pub publishers: usize,
    pub topics: usize,
    pub wildcard_fraction: f64,
    pub pairs: usize,
    pub payload_bytes: usize,
    pub qos: u8,
    /// Total messages per second over all publishers (open loop).
    pub rate: f64,
    /// Closed loop: messages outstanding (published, not yet delivered to all).
    pub closed_loop: Option<u64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub drain_s: f64,
    pub broker_pid: Option<u32>,
    /// Connections opened per second, over all workers.
    pub conn_rate: f64,
    pub connect_concurrency: usize,
    pub inflight_max: u32,
    /// `fanout`/`qos1`/`topics`/`p2p`: publishes carry RETAIN, so each one replaces its topic's
    /// retained value (with a data directory, a write to disk per topic and flush).
    pub retain: bool,
    pub topic_prefix: String,
    /// `fanout`/`qos1`: the topic instead of `<prefix>/f`; `%i` in it is each subscriber's or
    /// publisher's number, so subscriber i and publisher i share topic i.
    pub topic: Option<String>,
    /// Client identifier of each connection; `%i` is the connection's number.
    pub client_id: String,
    /// Subscribers' reads take the kernel's receive stamp (`SO_TIMESTAMPNS`), so the report
    /// separates the broker's latency from this generator's own read lag.
    pub socket_stamps: bool,
    /// Lost messages, in percent of those expected, above which the run fails (exit code 1).
    pub max_loss_pct: f64,
    /// Worker processes (`--procs`); 1: this process opens the connections itself.
    pub procs: usize,
    /// `--report FILE.html`: the run as one self-contained page of charts (`html.rs`).
    pub report_html: Option<PathBuf>,
    /// Set in a worker process: its number, `0..procs`. It opens the connections whose
    /// index is this modulo `procs`, and talks to its parent (`wire.rs`).
    pub proc_index: Option<usize>,
}

pub const USAGE: &str = "\
usage: fanfare-loadtest SCENARIO [flags]
       fanfare-loadtest conn|sub|pub [emqtt-bench flags: -h -p -c -i -I -t -s -q -V -u -P -k --ws]
       fanfare-loadtest compare A.json B.json ... [--out FILE.html]   runs side by side

scenarios:
  conn      open --subscribers N connections at --conn-rate/s, each CONNECT + SUBSCRIBE, hold --duration s
  fanout    --publishers P (default 1) -> --subscribers N on one topic, --rate msgs/s or --closed-loop W
  topics    --topics M, --subscribers N spread over them, --wildcard-fraction F of them on prefix/#
  retained  store retained values on --topics M, then --subscribers K late joiners must get them all
  qos1      fanout at QoS 1 (subscriptions and publishes), PUBACKs both ways, --inflight per publisher
  p2p       --pairs N pairs, each connection publishes to its partner's topic

flags (defaults in brackets):
  --url URL                  tcp://HOST:PORT, ws://HOST:PORT/PATH, or over TLS
                             mqtts://HOST:PORT and wss://HOST:PORT/PATH [tcp://127.0.0.1:1883];
                             repeat it to spread the connections round-robin over several
                             brokers or cluster nodes (one transport for all)
  --pub-url URL              connections that only publish go here instead (repeatable,
                             round-robin): subscribers on --url, publishers on another node
  --ca FILE                  TLS: trust the CA certificates in this PEM file (default: the
                             system's trust store)
  --insecure                 TLS: accept ANY server certificate, for test brokers only: the
                             certificate and its name are NOT verified, so anyone on the
                             path can pose as the broker. Never against a real deployment
  --tls-resume               TLS: resume sessions with tickets from earlier connections of the
                             run (default: every connection makes a full handshake)
  --mqtt 3.1.1|5             protocol version [3.1.1]
  --topic-alias-max N        MQTT 5: Topic Alias Maximum in every CONNECT, so the broker may
                             send topics by alias [0: none]
  --workers N                threads, one monoio runtime each [allowed cores / --procs]
  --procs N                  worker processes, each with its share of the connections, of
                             the allowed cores and of --source (or its own 127.0.0.x); one
                             merged report [1]
  --ring defer|coop|plain    io_uring setup flags of the workers [defer]
  --no-pin                   do not pin workers (default: worker i on the i-th allowed core,
                             so `taskset -c 0` keeps them all on core 0)
  --source IP,IP,...         bind source addresses round-robin (e.g. 127.0.0.2,127.0.0.3)
  --subscribers N            [100]      --publishers N   [1]
  --topics M                 [100]      --wildcard-fraction F [0.1]
  --pairs N                  [100]      --payload BYTES  [64, at least 24]
  --qos 0|1                  [0]        --rate MSGS/S    [1000]
  --closed-loop W            keep W messages outstanding instead of a fixed rate
  --duration S [10]  --warmup S [2]  --drain S [3]
  --conn-rate N/S [2000]  --connect-concurrency N [512]  --timeout S [5]  --keep-alive S [60]
  --inflight N               QoS 1 messages unacknowledged per publisher [1000]
  --retain                   publishes carry RETAIN (retained: always) [off]
  --username U --password P  credentials every CONNECT carries (a password may be a JWT);
                             given together
  --read-buffer BYTES        per-connection read buffer [16384]
  --no-socket-stamps         read without the kernel's receive stamps (no socket latency,
                             no read lag in the report; one io_uring read per batch instead
                             of a readiness poll and a recvmsg)
  --broker-pid PID           sample the broker's CPU and RSS from /proc
  --report FILE.html         also write the run as one self-contained HTML page of charts
  --topic-prefix P           [fanfare-lt/<pid>]
  --topic T                  fanout, qos1: the topic [<prefix>/f]; %i is the number of
                             the subscriber or publisher (subscriber i and publisher i share it)
  --client-id ID             client identifiers; %i is the connection's number [lt<pid>-%i]
  --allow-remote             permit a non-loopback target (refused by default)
  --max-loss PCT             fail (exit 1) when more than PCT % of the expected deliveries
                             were lost [0: any loss fails]

exit status: 0 the run passed; 1 it ran, but a connection failed or dropped, or messages were
lost beyond --max-loss; 2 it could not run (bad flags, no runtime)
";

/// Most `--url` (and `--pub-url`) endpoints: the nodes of a large cluster. Bounds the name
/// resolution and TLS set-up done before the run.
const URLS_MAX: usize = 256;
/// The hidden flag that makes a process one of the workers of `--procs`.
pub const PROC_INDEX_FLAG: &str = "proc-index";
/// Most worker processes: one per core of a large machine, each with its own 127.0.0.x.
const PROCS_MAX: usize = 64;

fn value<T: std::str::FromStr>(parser: &mut lexopt::Parser, name: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    let raw = parser
        .value()
        .with_context(|| format!("{name} needs a value"))?;
    let text = raw.to_string_lossy().into_owned();
    text.parse::<T>()
        .map_err(|e| anyhow::anyhow!("{name} {text:?}: {e}"))
}

pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> anyhow::Result<Config> {
    use lexopt::prelude::*;
    let args = crate::alias::translate(args.into_iter().collect())?;
    let mut parser = lexopt::Parser::from_args(args);
    let mut scenario = None;
    let mut urls: Vec<String> = Vec::new();
    let mut pub_urls: Vec<String> = Vec::new();
    let mut version = Version::V311;
    let mut workers: Option<usize> = None;
    let mut procs = 1usize;
    let mut proc_index: Option<usize> = None;
    let mut pin = true;
    let mut ring_mode = RingMode::Defer;
    let mut sources: Vec<IpAddr> = Vec::new();
    let (mut subscribers, mut publishers, mut topics, mut pairs) =
        (100usize, 1usize, 100usize, 100usize);
    let mut wildcard_fraction: f64 = 0.1;
    let mut payload_bytes = 64usize;
    let mut qos = 0u8;
    let mut rate: f64 = 1000.0;
    let mut closed_loop = None;
    let (mut duration_s, mut warmup_s, mut drain_s) = (10.0, 2.0, 3.0);
    let mut broker_pid = None;
    let mut conn_rate: f64 = 2000.0;
    let mut connect_concurrency = 512usize;
    let mut timeout_s = 5.0;
    let mut keep_alive_s = 60u16;
    let mut topic_alias_max = 0u16;
    let mut username: Option<String> = None;
    let mut password: Option<String> = None;
    let mut inflight_max = 1000u32;
    let mut retain = false;
    let mut read_buffer_bytes = 16384usize;
    let mut topic_prefix = format!("fanfare-lt/{}", std::process::id());
    let mut allow_remote = false;
    let mut socket_stamps = true;
    let mut ca: Option<PathBuf> = None;
    let mut insecure = false;
    let mut tls_resume = false;
    let mut max_loss_pct = 0.0;
    let mut report_html: Option<PathBuf> = None;
    let mut topic: Option<String> = None;
    let mut client_id = format!("lt{}-%i", std::process::id());
    while let Some(arg) = parser.next()? {
        match arg {
            Value(v) if scenario.is_none() => {
                scenario = Some(match v.to_string_lossy().as_ref() {
                    "conn" => Scenario::Conn,
                    "fanout" => Scenario::Fanout,
                    "topics" => Scenario::Topics,
                    "retained" => Scenario::Retained,
                    "qos1" => Scenario::Qos1,
                    "p2p" => Scenario::P2p,
                    other => bail!("unknown scenario {other:?}\n{USAGE}"),
                });
            }
            Long("url") => urls.push(value(&mut parser, "--url")?),
            Long("pub-url") => pub_urls.push(value(&mut parser, "--pub-url")?),
            Long("ca") => ca = Some(parser.value().context("--ca needs a file")?.into()),
            Long("insecure") => insecure = true,
            Long("tls-resume") => tls_resume = true,
            Long("mqtt") => {
                version = match value::<String>(&mut parser, "--mqtt")?.as_str() {
                    "3.1.1" | "311" | "4" => Version::V311,
                    "5" | "5.0" => Version::V5,
                    other => bail!("--mqtt must be 3.1.1 or 5, not {other:?}"),
                }
            }
            Long("workers") => workers = Some(value(&mut parser, "--workers")?),
            Long("procs") => procs = value(&mut parser, "--procs")?,
            // Hidden: how the parent of `--procs` starts its worker processes.
            Long(PROC_INDEX_FLAG) => proc_index = Some(value(&mut parser, "--proc-index")?),
            Long("no-pin") => pin = false,
            Long("ring") => {
                ring_mode = match value::<String>(&mut parser, "--ring")?.as_str() {
                    "defer" => RingMode::Defer,
                    "coop" => RingMode::Coop,
                    "plain" => RingMode::Plain,
                    other => bail!("--ring must be defer, coop or plain, not {other:?}"),
                };
            }
            Long("source") => {
                let list: String = value(&mut parser, "--source")?;
                sources = list
                    .split(',')
                    .map(parse_ip)
                    .collect::<anyhow::Result<_>>()?;
            }
            Long("subscribers") => subscribers = value(&mut parser, "--subscribers")?,
            Long("publishers") => publishers = value(&mut parser, "--publishers")?,
            Long("topics") => topics = value(&mut parser, "--topics")?,
            Long("wildcard-fraction") => {
                wildcard_fraction = value(&mut parser, "--wildcard-fraction")?
            }
            Long("pairs") => pairs = value(&mut parser, "--pairs")?,
            Long("payload") => payload_bytes = value(&mut parser, "--payload")?,
            Long("qos") => qos = value(&mut parser, "--qos")?,
            Long("rate") => rate = value(&mut parser, "--rate")?,
            Long("closed-loop") => closed_loop = Some(value(&mut parser, "--closed-loop")?),
            Long("duration") => duration_s = value(&mut parser, "--duration")?,
            Long("warmup") => warmup_s = value(&mut parser, "--warmup")?,
            Long("drain") => drain_s = value(&mut parser, "--drain")?,
            Long("broker-pid") => broker_pid = Some(value(&mut parser, "--broker-pid")?),
            Long("conn-rate") => conn_rate = value(&mut parser, "--conn-rate")?,
            Long("connect-concurrency") => {
                connect_concurrency = value(&mut parser, "--connect-concurrency")?
            }
            Long("timeout") => timeout_s = value(&mut parser, "--timeout")?,
            Long("keep-alive") => keep_alive_s = value(&mut parser, "--keep-alive")?,
            Long("topic-alias-max") => {
                topic_alias_max = value(&mut parser, "--topic-alias-max")?;
            }
            Long("username") => username = Some(value(&mut parser, "--username")?),
            Long("password") => password = Some(value(&mut parser, "--password")?),
            Long("inflight") => inflight_max = value(&mut parser, "--inflight")?,
            Long("retain") => retain = true,
            Long("read-buffer") => read_buffer_bytes = value(&mut parser, "--read-buffer")?,
            Long("topic-prefix") => topic_prefix = value(&mut parser, "--topic-prefix")?,
            Long("allow-remote") => allow_remote = true,
            Long("no-socket-stamps") => socket_stamps = false,
            Long("topic") => topic = Some(value(&mut parser, "--topic")?),
            Long("client-id") => client_id = value(&mut parser, "--client-id")?,
            Long("max-loss") => max_loss_pct = value(&mut parser, "--max-loss")?,
            Long("report") => {
                report_html = Some(parser.value().context("--report needs a file")?.into())
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("{}\n{USAGE}", arg.unexpected()),
        }
    }
    let scenario = scenario.with_context(|| format!("no scenario given\n{USAGE}"))?;
    if scenario == Scenario::Qos1 {
        qos = 1;
    }
    if urls.is_empty() {
        urls.push("tcp://127.0.0.1:1883".into());
    }
    ensure!(
        urls.len() + pub_urls.len() <= URLS_MAX,
        "at most {URLS_MAX} --url and --pub-url in all"
    );
    ensure!(
        pub_urls.is_empty() || !matches!(scenario, Scenario::Conn | Scenario::P2p),
        "--pub-url needs connections that only publish: conn has none, and in p2p every \
         connection subscribes too"
    );
    let transport = parse_url(&urls[0])?.transport;
    let tls = TlsFlags {
        ca,
        insecure,
        resume: tls_resume,
    };
    let main_endpoints = endpoints(&urls, "--url", transport, &tls, allow_remote)?;
    let pub_endpoints = endpoints(&pub_urls, "--pub-url", transport, &tls, allow_remote)?;
    for s in &sources {
        ensure!(
            allow_remote || s.is_loopback(),
            "source {s} is not a loopback address (use --allow-remote)"
        );
    }
    // MQTT 3.1.1 sends a password only with a user name [MQTT-3.1.2-22]: both or neither.
    let credentials = match (username, password) {
        (None, None) => None,
        (Some(username), Some(password)) => Some(crate::codec::Credentials {
            username,
            password: password.into_bytes(),
        }),
        _ => bail!("--username and --password go together"),
    };
    ensure!(
        (1..=PROCS_MAX).contains(&procs),
        "--procs must be 1..={PROCS_MAX}"
    );
    ensure!(
        proc_index.is_none_or(|i| i < procs),
        "--proc-index must be below --procs"
    );
    ensure!(
        procs == 1 || (scenario != Scenario::Retained && closed_loop.is_none()),
        "--procs works with fixed-rate runs other than retained: the closed loop and the \
         late joiners count deliveries within one process"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = workers.unwrap_or((cores / procs).max(1));
    ensure!((1..=256).contains(&workers), "--workers must be 1..=256");
    ensure!(qos <= 1, "--qos must be 0 or 1");
    ensure!(
        payload_bytes >= PAYLOAD_HEADER_BYTES,
        "--payload must be at least {PAYLOAD_HEADER_BYTES} bytes (timestamp, stream, sequence)"
    );
    ensure!(payload_bytes <= 1 << 20, "--payload is limited to 1 MiB");
    ensure!(topics >= 1, "--topics must be at least 1");
    // A fan-out of subscribers only (or publishers only) is what emqtt-bench's `sub` (`pub`)
    // runs: the other side is another process.
    ensure!(
        publishers >= 1 || matches!(scenario, Scenario::Fanout | Scenario::Qos1),
        "--publishers must be at least 1"
    );
    ensure!(
        topic.is_none() || matches!(scenario, Scenario::Fanout | Scenario::Qos1),
        "--topic applies to fanout and qos1"
    );
    ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    ensure!(
        conn_rate > 0.0 && conn_rate.is_finite(),
        "--conn-rate must be positive"
    );
    ensure!(
        (0.0..=100.0).contains(&max_loss_pct),
        "--max-loss must be a percentage in 0..=100"
    );
    ensure!(
        (0.0..=1.0).contains(&wildcard_fraction),
        "--wildcard-fraction must be in 0..=1"
    );
    ensure!(
        duration_s > 0.0 && duration_s <= 3600.0,
        "--duration must be in (0, 3600]"
    );
    ensure!(
        (0.0..=600.0).contains(&warmup_s),
        "--warmup must be in [0, 600]"
    );
    ensure!(
        (0.0..=600.0).contains(&drain_s),
        "--drain must be in [0, 600]"
    );
    ensure!(
        timeout_s > 0.0 && timeout_s <= 600.0,
        "--timeout must be in (0, 600]"
    );
    ensure!(
        (1..=65_535).contains(&inflight_max),
        "--inflight must be 1..=65535 (packet ids)"
    );
    ensure!(
        (512..=16 << 20).contains(&read_buffer_bytes),
        "--read-buffer must be 512 B ..= 16 MiB"
    );
    ensure!(
        connect_concurrency >= 1,
        "--connect-concurrency must be at least 1"
    );
    if let Some(w) = closed_loop {
        ensure!(w >= 1, "--closed-loop window must be at least 1");
    }
    ensure!(
        topic_alias_max == 0 || version == Version::V5,
        "--topic-alias-max needs --mqtt 5: MQTT 3.1.1 has no topic aliases"
    );
    let conns = match scenario {
        Scenario::P2p => pairs * 2,
        Scenario::Retained => subscribers + 1,
        _ => subscribers + publishers,
    };
    ensure!(conns >= 1, "the run has no connections");
    ensure!(
        conns == 1 || client_id.contains("%i"),
        "--client-id needs %i: every connection needs its own identifier"
    );
    if let Some(per_process) = crate::file_limit::connections_per_process() {
        ensure!(
            conns.div_ceil(procs) <= per_process,
            "{conns} connections exceed what {procs} process(es) may hold here ({per_process} \
             each under the open-file limit of {}); use --procs {}",
            crate::file_limit::soft_limit().unwrap_or(0),
            conns.div_ceil(per_process.max(1))
        );
    }
    Ok(Config {
        scenario,
        transport,
        target: Target {
            endpoints: main_endpoints,
            pub_endpoints,
            version,
            sources,
            keep_alive_s,
            topic_alias_max,
            credentials,
            timeout: Duration::from_secs_f64(timeout_s),
            read_buffer_bytes,
            packet_bytes_max: (payload_bytes + 4096).max(1 << 16),
        },
        workers,
        pin_cores: if pin {
            crate::cores::allowed_cores()
        } else {
            Vec::new()
        },
        procs,
        proc_index,
        report_html,
        ring_mode,
        subscribers,
        publishers,
        topics,
        wildcard_fraction,
        pairs,
        payload_bytes,
        qos,
        rate,
        closed_loop,
        duration_s,
        warmup_s,
        drain_s,
        broker_pid,
        conn_rate,
        connect_concurrency,
        inflight_max,
        retain,
        client_id,
        topic_prefix,
        topic,
        socket_stamps,
        max_loss_pct,
    })
}

/// What one connection does.
#[derive(Clone, Debug)]
pub struct ConnSpec {
    pub index: usize,
    pub subscribe: Option<SubSpec>,
    pub publish: Option<PubSpec>,
}

#[derive(Clone, Debug)]
pub struct SubSpec {
    pub filter: String,
    /// Topic index the filter matches exactly; `None` for a wildcard matching every topic.
    pub topic: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct PubSpec {
    /// (topic name, stream id stamped in payloads, topic index); published round-robin.
    pub topics: Vec<(String, u32, usize)>,
    pub rate_per_s: f64,
    /// Share of the closed-loop window this publisher may keep outstanding.
    pub window_msgs: u64,
    pub retain: bool,
}

impl Config {
    /// The connections of the run, in the order they are opened: subscribers first, so every
    /// subscription exists before the first publish.
    pub fn plan(&self) -> Vec<ConnSpec> {
        let prefix = &self.topic_prefix;
        let mut specs = Vec::new();
        let sub = |index, filter: String, topic| ConnSpec {
            index,
            subscribe: Some(SubSpec { filter, topic }),
            publish: None,
        };
        match self.scenario {
            Scenario::Conn => {
                for i in 0..self.subscribers {
                    specs.push(sub(i, format!("{prefix}/c/{i}"), Some(0)));
                }
            }
            Scenario::Fanout | Scenario::Qos1 => {
                let fanout = format!("{prefix}/f");
                let template = self.topic.as_deref().unwrap_or(&fanout);
                // With %i, subscriber i and publisher i have topic (and topic index) i.
                let per_conn = template.contains("%i");
                let topic = |i: usize| {
                    let name = template.replace("%i", &i.to_string());
                    (name, if per_conn { i } else { 0 })
                };
                for i in 0..self.subscribers {
                    let (name, t) = topic(i);
                    specs.push(sub(i, name, Some(t)));
                }
                for p in 0..self.publishers {
                    let (name, t) = topic(p);
                    specs.push(self.publisher(self.subscribers + p, vec![(name, p as u32, t)]));
                }
            }
            Scenario::Topics => {
                let wildcards = (self.subscribers as f64 * self.wildcard_fraction).round() as usize;
                for i in 0..self.subscribers {
                    if i < wildcards {
                        specs.push(sub(i, format!("{prefix}/t/#"), None));
                    } else {
                        let t = i % self.topics;
                        specs.push(sub(i, format!("{prefix}/t/{t}"), Some(t)));
                    }
                }
                // Topic t belongs to publisher t % P; its stream id is t, so every topic has
                // its own sequence numbers.
                for p in 0..self.publishers {
                    let owned: Vec<_> = (0..self.topics)
                        .filter(|t| t % self.publishers == p)
                        .map(|t| (format!("{prefix}/t/{t}"), t as u32, t))
                        .collect();
                    if !owned.is_empty() {
                        specs.push(self.publisher(self.subscribers + p, owned));
                    }
                }
            }
            Scenario::Retained => {
                for i in 0..self.subscribers {
                    specs.push(ConnSpec {
                        index: i,
                        subscribe: None,
                        publish: None,
                    });
                }
            }
            Scenario::P2p => {
                // Connection c subscribes to its own topic (index c) and publishes to its
                // partner's; both ends of a pair land on different workers when there are two.
                for c in 0..self.pairs * 2 {
                    let partner = c ^ 1;
                    let mut spec = self.publisher(
                        c,
                        vec![(format!("{prefix}/p/{partner}"), c as u32, partner)],
                    );
                    spec.subscribe = Some(SubSpec {
                        filter: format!("{prefix}/p/{c}"),
                        topic: Some(c),
                    });
                    specs.push(spec);
                }
            }
        }
        specs
    }

    fn publishing_conns(&self) -> usize {
        match self.scenario {
            Scenario::P2p => self.pairs * 2,
            Scenario::Topics => self.publishers.min(self.topics),
            _ => self.publishers,
        }
    }

    fn publisher(&self, index: usize, topics: Vec<(String, u32, usize)>) -> ConnSpec {
        let n = self.publishing_conns().max(1);
        ConnSpec {
            index,
            subscribe: None,
            publish: Some(PubSpec {
                topics,
                rate_per_s: self.rate / n as f64,
                window_msgs: self.closed_loop.map_or(0, |w| (w / n as u64).max(1)),
                retain: self.retain,
            }),
        }
    }

    /// How many topic indices `Shared::topic_subs` needs.
    pub fn topic_slots(&self) -> usize {
        match self.scenario {
            Scenario::Topics => self.topics,
            Scenario::P2p => self.pairs * 2,
            Scenario::Fanout | Scenario::Qos1
                if self.topic.as_deref().is_some_and(|t| t.contains("%i")) =>
            {
                self.subscribers.max(self.publishers)
            }
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Verify;

    fn args(s: &str) -> Vec<std::ffi::OsString> {
        s.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn refuses_remote_targets_by_default() {
        assert!(parse(args("fanout --url tcp://10.1.2.3:1883")).is_err());
        assert!(parse(args("fanout --url tcp://127.0.0.1:1883 --source 10.0.0.1")).is_err());
        assert!(
            parse(args(
                "fanout --url tcp://127.0.0.1:1883 --source 127.0.0.2,127.0.0.3"
            ))
            .is_ok()
        );
    }

    #[test]
    fn parses_ws_url_and_version() {
        let c = parse(args(
            "p2p --url ws://127.0.0.1:8080/mqtt --mqtt 5 --pairs 3",
        ))
        .unwrap();
        assert_eq!(
            c.target.endpoints[0].ws,
            Some(("127.0.0.1:8080".into(), "/mqtt".into()))
        );
        assert_eq!(c.target.version, Version::V5);
        let plan = c.plan();
        assert_eq!(plan.len(), 6);
        assert!(
            plan[0].publish.as_ref().unwrap().topics[0]
                .0
                .ends_with("/p/1")
        );
        assert!(
            plan[1].publish.as_ref().unwrap().topics[0]
                .0
                .ends_with("/p/0")
        );
    }

    #[test]
    fn tls_flags() {
        let dir = std::env::temp_dir().join(format!("lt-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        let ca = ca.display();

        let c = parse(args("fanout --url mqtts://127.0.0.1:8883 --insecure")).unwrap();
        assert_eq!(c.transport, Transport::Mqtts);
        let tls = c.target.endpoints[0].tls.as_ref().unwrap();
        assert_eq!((tls.verify.clone(), tls.alpn), (Verify::Insecure, "mqtt"));
        assert_eq!(tls.server_name.to_str(), "127.0.0.1");
        assert_eq!(c.target.endpoints[0].ws, None);

        let c = parse(args(&format!(
            "fanout --url wss://localhost:8443/mqtt --ca {ca}"
        )))
        .unwrap();
        assert_eq!(c.transport, Transport::Wss);
        let tls = c.target.endpoints[0].tls.as_ref().unwrap();
        assert!(matches!(tls.verify, Verify::Ca(_)));
        assert_eq!(tls.alpn, "http/1.1");
        assert_eq!(tls.server_name.to_str(), "localhost");
        assert_eq!(
            c.target.endpoints[0].ws,
            Some(("localhost:8443".into(), "/mqtt".into()))
        );

        // Plain transports have no TLS, and refuse the TLS flags rather than ignore them.
        let c = parse(args("fanout --url tcp://127.0.0.1:1883")).unwrap();
        assert!(c.target.endpoints[0].tls.is_none());
        assert!(parse(args("fanout --url tcp://127.0.0.1:1883 --insecure")).is_err());
        assert!(parse(args(&format!("fanout --url ws://127.0.0.1:80/m --ca {ca}"))).is_err());
        // Not both; the file must exist and hold a certificate.
        let both = format!("fanout --url mqtts://127.0.0.1:8883 --insecure --ca {ca}");
        assert!(parse(args(&both)).is_err());
        assert!(
            parse(args(
                "fanout --url mqtts://127.0.0.1:8883 --ca /nonexistent.pem"
            ))
            .is_err()
        );
        // Neither: the system's roots, or a clear error where the system has none.
        match parse(args("fanout --url mqtts://127.0.0.1:8883")) {
            Ok(c) => assert_eq!(
                c.target.endpoints[0].tls.as_ref().unwrap().verify,
                Verify::System
            ),
            Err(e) => assert!(format!("{e:#}").contains("--ca"), "{e:#}"),
        }
    }

    #[test]
    fn payload_must_hold_the_header() {
        assert!(parse(args("fanout --payload 15")).is_err());
    }

    #[test]
    fn topics_plan_spreads_subscribers_and_owns_topics_once() {
        let c = parse(args(
            "topics --topics 5 --subscribers 20 --wildcard-fraction 0.25 --publishers 2",
        ))
        .unwrap();
        let plan = c.plan();
        let wild = plan
            .iter()
            .filter(|s| matches!(&s.subscribe, Some(s) if s.topic.is_none()))
            .count();
        assert_eq!(wild, 5);
        let published: usize = plan
            .iter()
            .filter_map(|s| s.publish.as_ref())
            .map(|p| p.topics.len())
            .sum();
        assert_eq!(published, 5);
    }
}

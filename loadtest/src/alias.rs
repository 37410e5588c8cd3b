//! emqtt-bench's vocabulary: `conn`, `sub` and `pub` with its short flags, rewritten into this
//! tool's own flags before they are parsed, so a test written for emqtt-bench runs here
//! unchanged and means the same. `loadtest/README.md` maps each flag.
//!
//! - `conn` is this tool's `conn` scenario; `sub` is a `fanout` of subscribers only and `pub`
//!   a `fanout` of publishers only, as emqtt-bench runs each side as its own process.
//! - `-h HOST -p PORT [--ws]` become `--url tcp://HOST:PORT` (`ws://HOST:PORT/mqtt`);
//!   emqtt-bench's defaults are `localhost` and 1883 (8083 with `--ws`).
//! - `-c N` is the number of clients: `--subscribers` for `conn` and `sub`, `--publishers`
//!   for `pub`. `-i MS` (between connections) becomes `--conn-rate 1000/MS`; `-I MS` (between
//!   one client's publishes, default 1000) becomes `--rate N×1000/MS`.
//! - `-t`, `-s`, `-q`, `-V`, `-u`, `-P`, `-k` become `--topic`, `--payload`, `--qos`,
//!   `--mqtt`, `--username`, `--password`, `--keep-alive`; `%i` in a topic is the client's
//!   number, as in emqtt-bench.
//!
//! A bare `-h` is still help. Long flags pass through, so both vocabularies mix.

use std::ffi::OsString;

use anyhow::{Context, bail, ensure};

/// emqtt-bench's publish interval when `-I` is not given.
const PUBLISH_INTERVAL_MS_DEFAULT: f64 = 1000.0;

/// The command line in this tool's own flags; anything but `conn`, `sub` and `pub` unchanged.
pub fn translate(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let command = args.first().and_then(|a| a.to_str()).unwrap_or_default();
    let (scenario, side) = match command {
        "conn" => ("conn", "--subscribers"),
        "sub" => ("fanout", "--subscribers"),
        "pub" => ("fanout", "--publishers"),
        _ => return Ok(args),
    };
    let mut t = Translation {
        out: vec![scenario.into()],
        side,
        host: "localhost".into(),
        port: None,
        ws: false,
        addressed: false,
        count: None,
        interval_ms: None,
    };
    let mut rest = args[1..].iter().peekable();
    while let Some(arg) = rest.next() {
        let arg = arg.to_str().context("arguments must be UTF-8")?;
        let takes_value = matches!(
            arg,
            "-h" | "-p" | "-c" | "-i" | "-I" | "-t" | "-s" | "-q" | "-V" | "-u" | "-P" | "-k"
        );
        // A bare `-h` (nothing after it, or another flag) keeps meaning help.
        let next_is_value = rest
            .peek()
            .and_then(|v| v.to_str())
            .is_some_and(|v| !v.starts_with('-'));
        if !takes_value || (arg == "-h" && !next_is_value) {
            match arg {
                "--ws" => {
                    t.ws = true;
                    t.addressed = true;
                }
                other => t.out.push(other.into()),
            }
            continue;
        }
        let value = rest
            .next()
            .and_then(|v| v.to_str())
            .with_context(|| format!("{arg} needs a value"))?;
        t.flag(arg, value)?;
    }
    t.finish(command)
}

/// An emqtt-bench command line on its way to this tool's flags.
struct Translation {
    out: Vec<String>,
    /// The flag `-c` becomes.
    side: &'static str,
    host: String,
    port: Option<String>,
    ws: bool,
    /// `-h`, `-p` or `--ws` was given: the broker is named the emqtt-bench way.
    addressed: bool,
    count: Option<f64>,
    interval_ms: Option<f64>,
}

impl Translation {
    /// One short flag with its value.
    fn flag(&mut self, arg: &str, value: &str) -> anyhow::Result<()> {
        let number = || -> anyhow::Result<f64> {
            value
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .with_context(|| format!("{arg} {value:?}: not a number"))
        };
        let long = match arg {
            "-h" => {
                self.addressed = true;
                self.host = value.into();
                return Ok(());
            }
            "-p" => {
                self.addressed = true;
                self.port = Some(value.into());
                return Ok(());
            }
            "-I" => {
                self.interval_ms = Some(number()?);
                return Ok(());
            }
            "-c" => {
                self.count = Some(number()?);
                self.side
            }
            "-i" => {
                let ms = number()?;
                // -i 0: no pause between connections; the concurrency limit still applies.
                let per_s = if ms > 0.0 { 1000.0 / ms } else { 1e6 };
                self.out.extend(["--conn-rate".into(), per_s.to_string()]);
                return Ok(());
            }
            "-V" => {
                self.out
                    .extend(["--mqtt".into(), mqtt_version(value)?.into()]);
                return Ok(());
            }
            short => long_name(short),
        };
        self.out.extend([long.into(), value.into()]);
        Ok(())
    }

    /// The URL, and for `pub` the total rate, once every flag is known.
    fn finish(mut self, command: &str) -> anyhow::Result<Vec<OsString>> {
        let ws = self.ws;
        let port = self
            .port
            .unwrap_or_else(|| if ws { "8083" } else { "1883" }.into());
        let url = match ws {
            true => format!("ws://{}:{port}/mqtt", self.host),
            false => format!("tcp://{}:{port}", self.host),
        };
        // Native `--url`s (repeatable) stand unless the broker is also named with -h/-p/--ws.
        let native_url = self
            .out
            .iter()
            .any(|a| a == "--url" || a.starts_with("--url="));
        ensure!(
            !(native_url && self.addressed),
            "-h, -p and --ws name the broker as --url does: give one or the other"
        );
        if !native_url {
            self.out.splice(1..1, ["--url".to_string(), url]);
        }
        match command {
            "pub" => {
                let interval_ms = self.interval_ms.unwrap_or(PUBLISH_INTERVAL_MS_DEFAULT);
                ensure!(interval_ms > 0.0, "-I must be more than 0 ms");
                // emqtt-bench's default of 200 clients when -c is not given.
                let clients = self.count.unwrap_or(200.0);
                if self.count.is_none() {
                    self.out.extend(["--publishers".into(), "200".into()]);
                }
                let rate = clients * 1000.0 / interval_ms;
                self.out.extend(["--rate".into(), rate.to_string()]);
                self.out.extend(["--subscribers".into(), "0".into()]);
            }
            _ => ensure!(
                self.interval_ms.is_none(),
                "-I (publish interval) applies to pub"
            ),
        }
        if command == "sub" {
            self.out.extend(["--publishers".into(), "0".into()]);
        }
        Ok(self.out.into_iter().map(OsString::from).collect())
    }
}

fn long_name(short: &str) -> &'static str {
    match short {
        "-t" => "--topic",
        "-s" => "--payload",
        "-q" => "--qos",
        "-u" => "--username",
        "-P" => "--password",
        _ => "--keep-alive",
    }
}

/// emqtt-bench's `-V`: 4 is MQTT 3.1.1, 5 is MQTT 5; 3 (MQTT 3.1) is not spoken here.
fn mqtt_version(v: &str) -> anyhow::Result<&'static str> {
    match v {
        "4" => Ok("3.1.1"),
        "5" => Ok("5"),
        other => bail!("-V {other:?}: only 4 (MQTT 3.1.1) and 5 are supported"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(Into::into).collect()
    }

    /// The alias and the native command line give the same configuration and the same plan
    /// of connections.
    fn same(alias: &str, native: &str) {
        let a = parse(args(alias)).unwrap_or_else(|e| panic!("{alias}: {e:#}"));
        let n = parse(args(native)).unwrap_or_else(|e| panic!("{native}: {e:#}"));
        assert_eq!(format!("{a:?}"), format!("{n:?}"), "{alias}");
        assert_eq!(
            format!("{:?}", a.plan()),
            format!("{:?}", n.plan()),
            "{alias}"
        );
    }

    #[test]
    fn conn_aliases() {
        same(
            "conn -h 127.0.0.1 -p 1884 -c 50 -i 2",
            "conn --url tcp://127.0.0.1:1884 --subscribers 50 --conn-rate 500",
        );
        same(
            "conn -h 127.0.0.1 -c 10 --ws -V 5 -k 30",
            "conn --url ws://127.0.0.1:8083/mqtt --subscribers 10 --mqtt 5 --keep-alive 30",
        );
        same(
            "conn -c 3 -u user -P secret",
            "conn --url tcp://localhost:1883 --subscribers 3 --username user --password secret",
        );
    }

    #[test]
    fn native_urls_stand_but_not_beside_host_and_port() {
        same(
            "conn --url tcp://127.0.0.1:1884 --url tcp://127.0.0.1:1885 -c 4",
            "conn --url tcp://127.0.0.1:1884 --url tcp://127.0.0.1:1885 --subscribers 4",
        );
        assert!(parse(args("conn -p 1884 --url tcp://127.0.0.1:1885")).is_err());
    }

    #[test]
    fn sub_aliases() {
        same(
            "sub -h 127.0.0.1 -p 1883 -c 20 -t bench/%i -q 1",
            "fanout --url tcp://127.0.0.1:1883 --subscribers 20 --topic bench/%i --qos 1 \
             --publishers 0",
        );
    }

    #[test]
    fn pub_aliases() {
        same(
            "pub -h 127.0.0.1 -c 10 -I 20 -t bench/%i -s 256 -q 1",
            "fanout --url tcp://127.0.0.1:1883 --publishers 10 --topic bench/%i --payload 256 \
             --qos 1 --rate 500 --subscribers 0",
        );
        // Native long flags mix in and pass through.
        same(
            "pub -c 2 -t t --duration 3 --client-id c%i",
            "fanout --url tcp://localhost:1883 --publishers 2 --topic t --duration 3 \
             --client-id c%i --rate 2 --subscribers 0",
        );
    }

    #[test]
    fn percent_i_gives_each_client_its_topic_and_id() {
        let c = parse(args("sub -h 127.0.0.1 -c 3 -t bench/%i")).unwrap();
        let plan = c.plan();
        let filters: Vec<_> = plan
            .iter()
            .map(|s| s.subscribe.as_ref().unwrap().filter.as_str())
            .collect();
        assert_eq!(filters, ["bench/0", "bench/1", "bench/2"]);
        assert_eq!(c.topic_slots(), 3);
        let c = parse(args("pub -h 127.0.0.1 -c 2 -t bench/%i")).unwrap();
        let topics: Vec<_> = c
            .plan()
            .iter()
            .map(|s| s.publish.as_ref().unwrap().topics[0].0.clone())
            .collect();
        assert_eq!(topics, ["bench/0", "bench/1"]);
        assert!(parse(args("conn -c 2 --client-id same")).is_err());
    }

    #[test]
    fn bare_h_is_still_help_and_bad_values_are_refused() {
        assert_eq!(translate(args("fanout -h")).unwrap(), args("fanout -h"));
        assert!(translate(args("conn -h")).unwrap().contains(&"-h".into()));
        assert!(translate(args("pub -I 0")).is_err());
        assert!(translate(args("sub -I 10")).is_err());
        assert!(translate(args("conn -V 3")).is_err());
        assert!(translate(args("conn -c")).is_err());
    }
}

//! Prints the configuration and the steps a `broker_session` input holds, to read a crash:
//! `cargo run --example session_steps -- artifacts/broker_session/crash-...`.

use arbitrary::Unstructured;
use fanfare_fuzz::session::Step;

fn main() -> std::io::Result<()> {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path)?;
        let Some((&config, steps)) = data.split_first() else {
            continue;
        };
        println!(
            "{path}: {} shard(s), tight limits: {}",
            1 + config % 3,
            config & 0b100 != 0
        );
        let mut u = Unstructured::new(steps);
        while !u.is_empty() {
            match Step::read(&mut u) {
                Ok(step) => println!("  {step:?}"),
                Err(error) => println!("  ({error})"),
            }
        }
    }
    Ok(())
}

//! The example configuration shipped in `docs/` is one fanfare accepts.

use fanfare::config::Config;

#[test]
fn the_documented_example_configuration_is_valid() {
    let text = include_str!("../docs/fanfare.toml");
    let config = Config::from_toml(text, "docs/fanfare.toml").expect("the example parses");
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.limits.packet_bytes_max, 65536);
    assert_eq!(config.policies.len(), 1);
}

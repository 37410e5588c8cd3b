//! Topic names between this broker and a remote one: a mapping's topics are `filter` under
//! `local_prefix` here and under `remote_prefix` there, so a name is renamed by swapping one
//! prefix for the other, after checking that the mapping's filter matches what lies behind.

use crate::config::bridge::TopicMapping;
use crate::protocol::mqtt::topic::filter_matches;

/// The remote name of local topic `topic`, by the first `out`/`both` mapping that matches it.
pub fn to_remote(mappings: &[TopicMapping], topic: &str) -> Option<(String, u8)> {
    mappings
        .iter()
        .filter(|mapping| mapping.direction.carries_out())
        .find_map(|mapping| {
            swap(
                topic,
                &mapping.local_prefix,
                &mapping.remote_prefix,
                mapping,
            )
            .map(|name| (name, mapping.qos))
        })
}

/// The local name of remote topic `topic`, by the first `in`/`both` mapping that matches it.
pub fn to_local(mappings: &[TopicMapping], topic: &str) -> Option<(String, u8)> {
    mappings
        .iter()
        .filter(|mapping| mapping.direction.carries_in())
        .find_map(|mapping| {
            swap(
                topic,
                &mapping.remote_prefix,
                &mapping.local_prefix,
                mapping,
            )
            .map(|name| (name, mapping.qos))
        })
}

fn swap(topic: &str, from: &str, to: &str, mapping: &TopicMapping) -> Option<String> {
    let rest = topic.strip_prefix(from)?;
    // Behind the prefix the topic must be a name of its own, which `filter` matches.
    if rest.is_empty() || !filter_matches(&mapping.filter, rest) {
        return None;
    }
    Some(format!("{to}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bridge::Direction;

    fn mapping(filter: &str, direction: Direction, local: &str, remote: &str) -> TopicMapping {
        TopicMapping {
            filter: filter.to_owned(),
            direction,
            qos: 1,
            local_prefix: local.to_owned(),
            remote_prefix: remote.to_owned(),
        }
    }

    #[test]
    fn prefixes_are_swapped_both_ways() {
        let mappings = [mapping("scores/#", Direction::Both, "edge/", "origin/")];
        assert_eq!(
            to_remote(&mappings, "edge/scores/1"),
            Some(("origin/scores/1".to_owned(), 1))
        );
        assert_eq!(
            to_local(&mappings, "origin/scores/1"),
            Some(("edge/scores/1".to_owned(), 1))
        );
        assert_eq!(to_remote(&mappings, "scores/1"), None, "no local prefix");
        assert_eq!(to_local(&mappings, "origin/other"), None, "filter");
    }

    #[test]
    fn direction_is_respected() {
        let mappings = [
            mapping("a/#", Direction::In, "", "r/"),
            mapping("b/#", Direction::Out, "", ""),
        ];
        assert_eq!(to_remote(&mappings, "a/1"), None);
        assert_eq!(to_local(&mappings, "r/a/1"), Some(("a/1".to_owned(), 1)));
        assert_eq!(to_local(&mappings, "b/1"), None);
        assert_eq!(to_remote(&mappings, "b/1"), Some(("b/1".to_owned(), 1)));
    }
}

//! The zenoh key layout of oscloud links (documented in the crate root).

/// Which side of a link a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The node that dialled.
    Dialler,
    /// The node that listened.
    Listener,
}

impl Side {
    fn tag(self) -> &'static str {
        match self {
            Side::Dialler => "d",
            Side::Listener => "l",
        }
    }
}

/// The liveliness token of a node listening as `node` in `cloud`.
pub(crate) fn node(cloud: &str, node: &str) -> String {
    format!("oscloud/{cloud}/node/{node}")
}

/// The queryable a listening node takes link requests on.
pub(crate) fn accept(cloud: &str, node: &str) -> String {
    format!("oscloud/{cloud}/node/{node}/accept")
}

/// The key `side` of link `id` publishes its frames on, which is also the
/// key of its liveliness token.
pub(crate) fn link(cloud: &str, id: &str, side: Side) -> String {
    format!("oscloud/{cloud}/link/{id}/{}", side.tag())
}

/// The key the frames of pipe `pipe` of node `node` are published on
/// when tapped.
pub(crate) fn pipe(cloud: &str, node: &str, pipe: &str) -> String {
    format!("oscloud/{cloud}/pipe/{node}/{pipe}")
}

/// Whether `part` may be a cloud or node name: 1 to 64 ASCII letters,
/// digits, `-`, `_` or `.` (so it is one chunk of a key expression, with
/// no wildcard or separator in it).
pub(crate) fn valid_name(part: &str) -> bool {
    (1..=64).contains(&part.len())
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether `id` is a link id as diallers make them (16 lower-case hex
/// digits).
pub(crate) fn valid_link_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh link id.
pub(crate) fn new_link_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(node("lab", "a"), "oscloud/lab/node/a");
        assert_eq!(accept("lab", "a"), "oscloud/lab/node/a/accept");
        assert_eq!(
            link("lab", "00ff", Side::Dialler),
            "oscloud/lab/link/00ff/d"
        );
        assert_eq!(
            link("lab", "00ff", Side::Listener),
            "oscloud/lab/link/00ff/l"
        );
        assert_eq!(pipe("lab", "a", "readings"), "oscloud/lab/pipe/a/readings");
    }

    #[test]
    fn names() {
        for ok in ["a", "node-1", "lab_2.b", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "*",
            "**",
            "a*",
            "$x",
            "a?b",
            "a#b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        let id = new_link_id();
        assert!(valid_link_id(&id), "{id}");
        for bad in [
            "",
            "00ff",
            "00000000000000FF",
            "000000000000000g",
            "0000000000000000a",
        ] {
            assert!(!valid_link_id(bad), "{bad}");
        }
    }
}

use oscloud_core::Error;

use crate::Target;

fn parse(s: &str) -> Result<Target, Error> {
    Target::parse(&s.parse()?)
}

#[test]
fn addresses_name_a_router_a_cloud_and_a_node() {
    let t = parse("zenoh://127.0.0.1:7448/lab/node-1").unwrap();
    assert_eq!(t.router.as_deref(), Some("tcp/127.0.0.1:7448"));
    assert_eq!((t.cloud.as_str(), t.node.as_str()), ("lab", "node-1"));
    assert_eq!(t.config, None);

    let t = parse("zenoh://router.example/lab/b").unwrap();
    assert_eq!(t.router.as_deref(), Some("tcp/router.example:7447"));

    let t = parse("zenoh://[::1]:7000/lab/b").unwrap();
    assert_eq!(t.router.as_deref(), Some("tcp/[::1]:7000"));

    let t = parse("zenoh:///lab/b?config=/etc/zenoh.json5").unwrap();
    assert_eq!(t.router, None);
    assert_eq!(t.config.as_deref(), Some("/etc/zenoh.json5"));
}

#[test]
fn bad_addresses_say_what_is_wrong() {
    for (bad, says) in [
        ("zenoh://127.0.0.1:7447/lab", "/<cloud>/<node>"),
        ("zenoh://127.0.0.1:7447/", "/<cloud>/<node>"),
        ("zenoh://127.0.0.1:7447/lab/a/b", "node name"),
        ("zenoh://127.0.0.1:7447/l*b/a", "cloud name"),
        ("zenoh://127.0.0.1:7447/lab/**", "node name"),
        ("zenoh://127.0.0.1:0/lab/a", "port cannot be 0"),
        ("zenoh:///lab/a", "router"),
        ("zenoh://127.0.0.1:7447/lab/a?mode=peer", "mode"),
    ] {
        match parse(bad) {
            Err(Error::InvalidAddress { reason, .. }) => {
                assert!(reason.contains(says), "{bad}: {reason}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_config_file_is_named() {
    use oscloud_core::transport::Transport;
    let transport = crate::ZenohTransport::new();
    let addr = "zenoh:///lab/a?config=/nonexistent/zenoh.json5"
        .parse()
        .unwrap();
    match transport.connect(&addr).await {
        Err(Error::InvalidAddress { reason, .. }) => {
            assert!(reason.contains("/nonexistent/zenoh.json5"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_router_is_unreachable() {
    use oscloud_core::transport::Transport;
    // A port nothing listens on: bound, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let transport = crate::ZenohTransport::new();
    let addr = format!("zenoh://127.0.0.1:{port}/lab/a").parse().unwrap();
    match transport.connect(&addr).await {
        Err(Error::Unreachable { reason, .. }) => assert!(reason.contains("zenoh"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

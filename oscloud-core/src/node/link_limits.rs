//! What one link's peer may make this node hold ([`Limits`]): the node's
//! settings, or those of the listener that accepted the link. A listen
//! address may carry `link_budget` and `max_serving` parameters, written
//! as their settings are (`tcp://0.0.0.0:7000?link_budget=4MiB&max_serving=64`):
//! they replace [`NodeConfig::link_budget`] and
//! [`NodeConfig::max_serving`] for the links accepted there, and are
//! taken off the address before the transport sees it.

use super::NodeConfig;
use super::driver::Limits;
use crate::Error;
use crate::address::Address;

/// The parameters of a listen address that set its links' limits.
pub(crate) const LISTENER_PARAMS: [&str; 2] = ["link_budget", "max_serving"];

/// The limits of a link under `config`.
pub(crate) fn limits(config: &NodeConfig) -> Limits {
    Limits {
        max_queued: config.max_queued,
        budget: config.link_budget,
        max_serving: config.max_serving,
    }
}

/// The address a transport listens at for `addr` (without
/// [`LISTENER_PARAMS`]), and the limits of the links accepted there.
///
/// # Errors
/// [`Error::InvalidAddress`] when a parameter's value is not a valid
/// setting (as [`NodeConfig::set`] would refuse it).
pub(crate) fn listener(addr: &Address, config: &NodeConfig) -> Result<(Address, Limits), Error> {
    let mut own = config.clone();
    let mut at = addr.clone();
    for key in LISTENER_PARAMS {
        if let Some(value) = addr.param(key) {
            own.set(key, value).map_err(|e| Error::InvalidAddress {
                input: addr.to_string(),
                reason: e.to_string(),
            })?;
            at = at.without_param(key);
        }
    }
    Ok((at, limits(&own)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_parameters_set_the_limits_and_leave_the_address() {
        let config = NodeConfig::default();
        let addr: Address = "tcp://0.0.0.0:7000?link_budget=4MiB&max_serving=64&x=1"
            .parse()
            .unwrap();
        let (at, l) = listener(&addr, &config).unwrap();
        assert_eq!(at.to_string(), "tcp://0.0.0.0:7000?x=1");
        assert_eq!((l.budget, l.max_serving), (4 << 20, 64));
        assert_eq!(l.max_queued, config.max_queued);
        let plain: Address = "unix:///tmp/n.sock".parse().unwrap();
        let (at, l) = listener(&plain, &config).unwrap();
        assert_eq!(at, plain);
        assert_eq!(
            (l.budget, l.max_serving),
            (config.link_budget, config.max_serving)
        );
    }

    #[test]
    fn a_bad_listener_parameter_names_the_address_and_the_setting() {
        for (text, reason) in [
            ("tcp://127.0.0.1:0?max_serving=0", "above zero"),
            ("tcp://127.0.0.1:0?link_budget=lots", "not a size"),
        ] {
            let err = listener(&text.parse().unwrap(), &NodeConfig::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(text) && err.contains(reason), "{err}");
        }
    }
}

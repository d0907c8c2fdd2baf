//! Property tests of a link's send side ([`super::link_wire`]): callers
//! casting and calling directly or through the driver, a driver reading,
//! writing and sending pipe frames, a link that takes writes partly, late
//! or not at all, in random interleavings (see [`super::link_wire_sim`]).

use proptest::prelude::*;

use super::link_wire_sim::{CALLERS, Op, run};

fn op() -> impl Strategy<Value = Op> {
    let caller = 0..CALLERS;
    let len = prop_oneof![3 => 0u16..64, 1 => 0u16..2048];
    prop_oneof![
        3 => (caller.clone(), len.clone()).prop_map(|(caller, len)| Op::TryCast { caller, len }),
        3 => (caller.clone(), len.clone()).prop_map(|(caller, len)| Op::Cast { caller, len }),
        2 => (caller, len).prop_map(|(caller, len)| Op::Call { caller, len }),
        2 => Just(Op::Commands),
        2 => Just(Op::Write),
        2 => Just(Op::Read),
        1 => (0u16..1024).prop_map(|len| Op::Pipe { len }),
        2 => (1u16..4096).prop_map(|n| Op::PeerRead { n }),
        1 => (1u16..512, 1u16..8192, any::<bool>())
            .prop_map(|(limit, room, stall)| Op::Line { limit, room, stall }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Every cast and call a caller got in arrives once and in that
    /// caller's order, whether it went into the session directly or
    /// waited in the driver; calls get their own replies; pipe frames
    /// keep their order beside them.
    #[test]
    fn casts_and_calls_arrive_once_in_each_callers_order(
        max_send_queue in 1usize..12,
        max_queued in 1usize..8192,
        script in proptest::collection::vec(op(), 1..400),
    ) {
        run(max_send_queue, max_queued, &script);
    }
}

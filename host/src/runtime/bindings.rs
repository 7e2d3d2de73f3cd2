//! Host-side bindings of the `wharf:plugin` worlds a host serves: 0.6.0 (`wit/plugin.wit`),
//! 0.5.0, 0.4.0, 0.3.0 and 0.2.0 (`wit/deps/`). Each imports the interfaces of the versions before it
//! that it did not change, so one implementation of each interface serves every version.

/// `wharf:plugin/plugin@0.2.0`: its interfaces, and components built against it.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wharf:plugin/plugin@0.2.0",
        imports: {
            "wharf:plugin/state.get": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

/// `wharf:plugin/plugin@0.3.0`: 0.2.0's interfaces and a manifest that asks for hosts.
pub mod v0_3 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wharf:plugin/plugin@0.3.0",
        with: {
            "wharf:plugin/types@0.2.0": super::v0_2::wharf::plugin0_2_0::types,
            "wharf:plugin/log@0.2.0": super::v0_2::wharf::plugin0_2_0::log,
            "wharf:plugin/outbox@0.2.0": super::v0_2::wharf::plugin0_2_0::outbox,
            "wharf:plugin/state@0.2.0": super::v0_2::wharf::plugin0_2_0::state,
            "wharf:plugin/config@0.2.0": super::v0_2::wharf::plugin0_2_0::config,
        },
        imports: { default: trappable },
        exports: { default: async },
    });
}

/// `wharf:plugin/plugin@0.4.0`: ordering keys on the message handled, on what it
/// publishes (its own `outbox`) and in the manifest.
pub mod v0_4 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wharf:plugin/plugin@0.4.0",
        with: {
            "wharf:plugin/types@0.2.0": super::v0_2::wharf::plugin0_2_0::types,
            "wharf:plugin/log@0.2.0": super::v0_2::wharf::plugin0_2_0::log,
            "wharf:plugin/state@0.2.0": super::v0_2::wharf::plugin0_2_0::state,
            "wharf:plugin/config@0.2.0": super::v0_2::wharf::plugin0_2_0::config,
        },
        imports: { default: trappable },
        exports: { default: async },
    });
}

/// `wharf:plugin/plugin@0.5.0`: 0.4.0's message, outbox and manifest, and replies.
pub mod v0_5 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wharf:plugin/plugin@0.5.0",
        with: {
            "wharf:plugin/types@0.2.0": super::v0_2::wharf::plugin0_2_0::types,
            "wharf:plugin/log@0.2.0": super::v0_2::wharf::plugin0_2_0::log,
            "wharf:plugin/state@0.2.0": super::v0_2::wharf::plugin0_2_0::state,
            "wharf:plugin/config@0.2.0": super::v0_2::wharf::plugin0_2_0::config,
            "wharf:plugin/types@0.4.0": super::v0_4::wharf::plugin0_4_0::types,
            "wharf:plugin/outbox@0.4.0": super::v0_4::wharf::plugin0_4_0::outbox,
        },
        imports: { default: trappable },
        exports: { default: async },
    });
}

/// `wharf:plugin/plugin@0.6.0`: 0.5.0's world with an outbox that publishes to Kafka
/// topics too.
pub mod v0_6 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wharf:plugin/plugin@0.6.0",
        with: {
            "wharf:plugin/types@0.2.0": super::v0_2::wharf::plugin0_2_0::types,
            "wharf:plugin/log@0.2.0": super::v0_2::wharf::plugin0_2_0::log,
            "wharf:plugin/state@0.2.0": super::v0_2::wharf::plugin0_2_0::state,
            "wharf:plugin/config@0.2.0": super::v0_2::wharf::plugin0_2_0::config,
            "wharf:plugin/types@0.4.0": super::v0_4::wharf::plugin0_4_0::types,
            "wharf:plugin/reply@0.5.0": super::v0_5::wharf::plugin0_5_0::reply,
        },
        imports: { default: trappable },
        exports: { default: async },
    });
}

//! Host-side bindings of the `wharf:plugin` worlds a host serves: 0.3.0 (`wit/plugin.wit`)
//! and 0.2.0 (`wit/deps/wharf-plugin-0.2.0`), whose interfaces 0.3.0 imports unchanged, so
//! one implementation of them serves both.

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

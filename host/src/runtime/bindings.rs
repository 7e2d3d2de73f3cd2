//! Host-side bindings of the `wharf:plugin` world (`wit/plugin.wit`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "wharf:plugin/state.get": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

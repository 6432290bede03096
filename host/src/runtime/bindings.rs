//! The one host-side `bindgen`: the guest world's exports, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "filter-guest",
    additional_derives: [PartialEq, Eq, Hash],
});

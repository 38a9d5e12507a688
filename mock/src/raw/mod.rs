//! RawKV: TiKV's raw key-value API over the mock's data, with TiKV's checks and errors.

pub(crate) mod api;
mod handlers;
pub(crate) mod store;

#[cfg(test)]
mod tests;

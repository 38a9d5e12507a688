//! The client tour under async-std's executor:
//! `cargo run -p tikv-async-std --example tour_async_std -- <PD host:port>`.

use tikv_async_std as tikv;

include!("../../transport-tokio/examples/common/tour.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pd = pd_endpoint();
    async_std::task::block_on(tour(tikv::AsyncIoRuntime::new(), &pd))?;
    println!("tour done (async-std)");
    Ok(())
}

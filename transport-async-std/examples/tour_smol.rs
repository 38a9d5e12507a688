//! The client tour on smol, spawning the client's background tasks with `smol::spawn`:
//! `cargo run -p tikv-async-std --example tour_smol -- <PD host:port>`.

use tikv_async_std as tikv;

include!("../../transport-tokio/examples/common/tour.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pd = pd_endpoint();
    let runtime = tikv::AsyncIoRuntime::with_spawner(|task| smol::spawn(task).detach());
    smol::block_on(tour(runtime, &pd))?;
    println!("tour done (smol)");
    Ok(())
}

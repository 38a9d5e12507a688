//! The client tour on tokio: `cargo run -p tikv-tokio --example tour -- <PD host:port>`
//! (start a local mock cluster with `cargo run -p tikv-cli -- mock`).

use tikv_tokio as tikv;

include!("common/tour.rs");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pd = pd_endpoint();
    tour(tikv::TokioRuntime::current(), &pd).await?;
    println!("tour done (tokio)");
    Ok(())
}

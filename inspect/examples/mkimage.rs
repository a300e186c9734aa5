//! Writes test images for the inspector's benchmark and memory measurement.
//!
//! ```text
//! cargo run --release -p hvm-inspect --example mkimage -- big PATH MIB
//! cargo run --release -p hvm-inspect --example mkimage -- golden NAME PATH
//! ```
//!
//! `big`: see `benches/support/bigimage.rs`. `golden`: one of the golden images of
//! `hvm_tests::golden`.

#[path = "../benches/support/bigimage.rs"]
mod bigimage;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["big", path, mib] => bigimage::big(path, mib.parse()?),
        ["golden", name, path] => {
            let spec = hvm_tests::golden::specs()
                .into_iter()
                .find(|s| s.name == *name)
                .ok_or_else(|| anyhow::anyhow!("no golden spec {name}"))?;
            std::fs::write(path, hvm_tests::golden::generate(&spec).bytes)?;
            Ok(())
        }
        _ => anyhow::bail!("usage: mkimage big PATH MIB | mkimage golden NAME PATH"),
    }
}

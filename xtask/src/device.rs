//! The one place a backend is chosen: `--device cpu | cuda:N | vulkan[:N]` → a Burn [`Device`].
//!
//! `cpu` is Burn's `flex` backend (pure Rust, always compiled). GPU backends exist only when
//! xtask is built with the matching cargo feature; asking for one that is not compiled in is a
//! usage error that says which feature to enable.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// Parses a comma-separated device list (`cuda:0,cuda:1`): the first is the main device, the
/// others are the extra devices of data-parallel training. A device may repeat (`cpu,cpu`: two
/// replicas on one device, run one after the other — it exercises the data-parallel path, it does
/// not add compute).
pub fn parse_list(names: &str) -> Result<Vec<Device>> {
    let list: Vec<Device> = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(parse)
        .collect::<Result<_>>()?;
    if list.is_empty() {
        bail!("empty device list `{names}`");
    }
    Ok(list)
}

/// Parses a device name.
pub fn parse(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (
            k,
            Some(
                i.parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("bad device index in `{name}`"))?,
            ),
        ),
        None => (name, None),
    };
    match kind {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(index.unwrap_or(0))),
        #[cfg(feature = "vulkan")]
        "vulkan" => Ok(Device::vulkan(match index {
            Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
            None => burn::tensor::DeviceKind::DefaultDevice,
        })),
        #[allow(unreachable_patterns)] // the kinds compiled in matched above
        "cuda" | "vulkan" | "ndarray" => {
            let _ = index;
            bail!("device `{name}` needs xtask built with `--features {kind}`")
        }
        other => bail!("unknown device `{other}` (cpu, cuda:N, vulkan[:N])"),
    }
}

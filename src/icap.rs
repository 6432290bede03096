//! `hashgate icap`: the ICAP server's flags in (the config file's `[icap]` table), a
//! running ICAP server out (resolved and assembled by `hashgate_host::serve`).

use anyhow::Result;
use hashgate_host::config::{FileConfig, IcapFileConfig};
use hashgate_host::serve::Front;

use crate::cli::IcapArgs;
use crate::serve;

pub fn run(args: IcapArgs) -> Result<()> {
    let flags = FileConfig {
        icap: Some(IcapFileConfig {
            listen: args.listen,
            block_status: args.block_status,
            preview_bytes: args.preview,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            ..IcapFileConfig::default()
        }),
        ..FileConfig::default()
    };
    let settings = serve::settings(&args.enforce, flags)?;
    serve::run(Front::icap(&settings)?, &settings, args.check_config)
}

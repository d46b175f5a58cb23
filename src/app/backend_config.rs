//! Each backend's configuration, taken from the command line. Backends never see `Cli`:
//! each states in its own `Config` what it needs, so the layers below `app` do not depend
//! on the argument parser and tests build a backend without one.

use std::path::PathBuf;
use std::time::Duration;

use crate::backend::{libreswan, strongswan_stroke, strongswan_vici, xfrm};
use crate::cli::Cli;

fn timeout(cli: &Cli) -> Duration {
    Duration::from_secs(cli.command_timeout)
}

pub fn stroke(cli: &Cli) -> strongswan_stroke::Config {
    strongswan_stroke::Config {
        root: PathBuf::from(&cli.root_prefix),
        template_dir: cli.template_dir(),
        timeout: timeout(cli),
    }
}

pub fn vici(cli: &Cli) -> strongswan_vici::Config {
    strongswan_vici::Config {
        socket: cli.vici_socket(),
        timeout: timeout(cli),
    }
}

pub fn libreswan(cli: &Cli) -> libreswan::Config {
    libreswan::Config {
        root: PathBuf::from(&cli.root_prefix),
        ipsec_conf: cli.ipsec_conf.clone(),
        root_ipsec_conf: cli.root_ipsec_conf.clone(),
        ipsec_secrets: cli.ipsec_secrets.clone(),
        ipsec_ctl: cli.ipsec_ctl.clone(),
        ipsec_d: cli.ipsec_d.clone(),
        template_dir: cli.template_dir(),
        timeout: timeout(cli),
        use_default_crypto: cli.use_default_crypto,
    }
}

pub fn xfrm(cli: &Cli) -> xfrm::Config {
    xfrm::Config {
        root: PathBuf::from(&cli.root_prefix),
        rekey_grace: Duration::from_secs(cli.static_rekey_grace),
        timeout: timeout(cli),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::backend::libreswan::Paths;

    fn parse(args: &[&str]) -> Cli {
        let argv = ["ovs-monitor-ipsec", "unix:/db.sock"]
            .into_iter()
            .chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("valid arguments")
    }

    #[test]
    fn libreswan_paths_follow_the_root_prefix_except_root_ipsec_conf() {
        let cli = parse(&[
            "--root-prefix=/r",
            "--ipsec-conf=/etc/ovs.conf",
            "--root-ipsec-conf=/etc/ipsec.conf",
            "--ipsec-d=/var/lib/ipsec/nss",
            "--command-timeout=7",
        ]);
        let config = libreswan(&cli);
        assert_eq!(config.timeout, Duration::from_secs(7));
        let paths = Paths::new(&config);
        assert_eq!(paths.conf, PathBuf::from("/r/etc/ovs.conf"));
        assert_eq!(paths.root_conf, PathBuf::from("/etc/ipsec.conf"));
        assert_eq!(paths.secrets, PathBuf::from("/r/etc/ipsec.secrets"));
        assert_eq!(paths.ctl, PathBuf::from("/r/run/pluto/pluto.ctl"));
        assert_eq!(paths.nss_dir, Some(PathBuf::from("/r/var/lib/ipsec/nss")));
    }

    #[test]
    fn every_backend_gets_the_command_timeout_and_root_prefix() {
        let cli = parse(&[
            "--root-prefix=/r",
            "--command-timeout=9",
            "--static-rekey-grace=4",
        ]);
        assert_eq!(stroke(&cli).root, PathBuf::from("/r"));
        assert_eq!(stroke(&cli).timeout, Duration::from_secs(9));
        assert_eq!(vici(&cli).socket, PathBuf::from("/r/var/run/charon.vici"));
        assert_eq!(vici(&cli).timeout, Duration::from_secs(9));
        assert_eq!(xfrm(&cli).rekey_grace, Duration::from_secs(4));
        assert_eq!(xfrm(&cli).root, PathBuf::from("/r"));
    }
}

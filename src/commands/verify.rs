//! `meshctl verify` (being written).

/// Runs `meshctl verify`.
pub async fn run(_a: crate::cli::VerifyArgs, _n: bool, _v: bool) -> anyhow::Result<u8> {
    anyhow::bail!("meshctl verify is not implemented yet")
}

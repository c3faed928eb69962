//! The caller's RNG for crates on the rand_core 0.6 generation (rsa, pgp, cms).

use rand_core::RngCore;

/// Wraps the device's seeded stream for a crate on rand_core 0.6.
pub(crate) struct Rng06<'a>(pub(crate) &'a mut dyn RngCore);

impl rand_core_06::RngCore for Rng06<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

// The caller's generator is the device's seeded ChaCha20 stream.
impl rand_core_06::CryptoRng for Rng06<'_> {}

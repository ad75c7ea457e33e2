//! A pseudo-terminal pair: the channel opens the slave side's device path;
//! the simulator reads and writes the master side without blocking.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use tokio::io::unix::AsyncFd;

pub struct Terminal {
    master: AsyncFd<OwnedFd>,
    /// Held open so the master side does not see a hang-up while the
    /// channel closes and reopens the device.
    _slave: OwnedFd,
    device: PathBuf,
}

impl Terminal {
    pub fn open() -> anyhow::Result<Terminal> {
        let pair = nix::pty::openpty(None, None)?;
        // Raw from the start: no echo, no CR/LF translation by the line
        // discipline, as on a serial port.
        let mut termios = tcgetattr(pair.slave.as_fd())?;
        cfmakeraw(&mut termios);
        tcsetattr(pair.slave.as_fd(), SetArg::TCSANOW, &termios)?;
        let device = nix::unistd::ttyname(pair.slave.as_fd())?;
        fcntl(
            pair.master.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
        )?;
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the
        // same descriptor until the AsyncFd is dropped.
        let master = unsafe { AsyncFd::register(pair.master) }.map_err(|e| e.into_parts().1)?;
        Ok(Terminal {
            master,
            _slave: pair.slave,
            device,
        })
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), buf).map_err(io::Error::from)
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), bytes).map_err(io::Error::from))
            {
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

//! Wire codecs, sans I/O: bytes in, a parse result out. The TLS
//! ClientHello reader (`client_hello`) and the PROXY protocol v1/v2 header
//! (`proxy_header`) and a PostgreSQL client's first message (`postgres`);
//! the connection stages feed them what the socket has delivered.

pub(crate) mod client_hello;
pub(crate) mod postgres;
pub(crate) mod proxy_header;

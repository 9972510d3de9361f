//! The upstream side of an HTTP/1 exchange: the request head written, the response read, and the
//! idle connections kept between exchanges.

mod pool;
mod request_head;
mod response;

pub use pool::{IdlePool, UpstreamConnection};
pub use request_head::{BodyFraming, RequestFields};
pub use response::UpstreamResponse;

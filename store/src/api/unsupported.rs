//! RPCs that are not built yet answer `Unimplemented` with a message naming
//! what is missing, so clients fail clearly instead of hanging.

/// Generates RPCs that answer `Unimplemented` for `what`.
macro_rules! not_yet_rpcs {
    ($what:literal; $($name:ident($req:ty) -> $resp:ty;)*) => {
        $(
            // Written as `#[async_trait]` expands an `async fn`, since the
            // attribute runs before this macro does.
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                _: Request<$req>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err(super::not_yet($what)) })
            }
        )*
    };
}

pub(super) use not_yet_rpcs;

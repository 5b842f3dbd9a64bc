//! Route registration that keeps a list of what it registers: every module
//! declares its resources once, through [`Routes`], and the same code
//! either builds the actix router or, without one, only lists `(method,
//! path)` ([`super::route_table`]). A test compares that list with the
//! OpenAPI document, so an undocumented route cannot slip in.

use actix_web::dev::HttpServiceFactory;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, HttpRequest, HttpResponse, Responder, ResponseError};

use crate::error::ApiError;

/// Collects resources into an actix `ServiceConfig`, or only their list.
pub(crate) struct Routes<'a> {
    cfg: Option<&'a mut web::ServiceConfig>,
    table: Vec<(Method, String)>,
}

impl<'a> Routes<'a> {
    /// Registers into `cfg`; `None` only lists.
    pub(crate) fn new(cfg: Option<&'a mut web::ServiceConfig>) -> Routes<'a> {
        Routes {
            cfg,
            table: Vec::new(),
        }
    }

    /// A resource at `path` (an actix pattern); its routes are added with
    /// the builder's methods, and it is registered when the builder drops.
    pub(crate) fn resource(&mut self, path: &'static str) -> Resource<'_, 'a> {
        let inner = self.cfg.is_some().then(|| web::resource(path));
        Resource {
            routes: self,
            path,
            inner,
            methods: Vec::new(),
            otherwise: false,
        }
    }

    /// `(method, path)` of every route, in registration order.
    pub(crate) fn into_table(self) -> Vec<(Method, String)> {
        self.table
    }

    fn register(&mut self, service: impl HttpServiceFactory + 'static) {
        if let Some(cfg) = self.cfg.as_mut() {
            cfg.service(service);
        }
    }
}

/// One resource being declared.
pub(crate) struct Resource<'r, 'a> {
    routes: &'r mut Routes<'a>,
    path: &'static str,
    inner: Option<actix_web::Resource>,
    /// Methods answered, for the `Allow` header of a 405.
    methods: Vec<Method>,
    /// A handler of its own answers other methods.
    otherwise: bool,
}

impl Resource<'_, '_> {
    /// `method` is answered by `handler`.
    pub(crate) fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.routes
            .table
            .push((method.clone(), self.path.to_owned()));
        self.methods.push(method.clone());
        self.inner = self
            .inner
            .take()
            .map(|r| r.route(web::method(method).to(handler)));
        self
    }

    /// GET, and HEAD the same way without the body (the HTTP/1 encoder
    /// drops it): every GET route answers HEAD.
    pub(crate) fn get<F, Args>(mut self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        for method in [Method::GET, Method::HEAD] {
            self.routes
                .table
                .push((method.clone(), self.path.to_owned()));
            self.methods.push(method);
        }
        self.inner = self.inner.take().map(|r| r.route(super::get().to(handler)));
        self
    }

    pub(crate) fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::POST, handler)
    }

    pub(crate) fn delete<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::DELETE, handler)
    }

    /// What any other method gets (instead of actix's empty 405).
    pub(crate) fn otherwise<F, Args>(mut self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.otherwise = true;
        self.inner = self
            .inner
            .take()
            .map(|r| r.default_service(web::to(handler)));
        self
    }
}

impl Drop for Resource<'_, '_> {
    fn drop(&mut self) {
        let Some(mut resource) = self.inner.take() else {
            return;
        };
        if !self.otherwise {
            // A method not answered here: 405 with the `Allow` header RFC
            // 9110 asks for (actix's own 405 has none), JSON under /v1.
            let allow: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
            let allow = allow.join(", ");
            let v1 = self.path.starts_with("/v1/");
            resource = resource.default_service(web::to(move |req: HttpRequest| {
                let allow = allow.clone();
                async move {
                    let mut response = if v1 {
                        ApiError::MethodNotAllowed(format!(
                            "{} is not allowed on this route",
                            req.method()
                        ))
                        .error_response()
                    } else {
                        HttpResponse::MethodNotAllowed().finish()
                    };
                    if let Ok(value) = HeaderValue::from_str(&allow) {
                        response.headers_mut().insert(header::ALLOW, value);
                    }
                    response
                }
            }));
        }
        self.routes
            .register(resource.app_data(RoutePattern(self.path)));
    }
}

/// The pattern of the resource that answered a request, for the metrics'
/// `route` label: set on each resource, read back from the request once it
/// is answered (actix's own `match_pattern` matches the path against every
/// pattern again).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoutePattern(pub &'static str);

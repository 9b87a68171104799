//! The `#[spargio::main]` and `#[spargio::test]` attributes.
//!
//! Use them through the `spargio` crate (its default `macros` feature
//! re-exports them); the spargio crate's docs describe them with examples.
//!
//! The attributes parse their arguments and the `async fn` they sit on with
//! `proc_macro`'s token trees only (no `syn`, no `quote`): the item is split
//! into its attributes, visibility, name, argument list, return type and
//! body, and the body is kept as the tokens the user wrote, so every error
//! inside it points at the user's own code.
//!
//! The expansion of
//!
//! ```text
//! #[spargio::main(shards = 2)]
//! async fn main() -> io::Result<()> { BODY }
//! ```
//!
//! is
//!
//! ```text
//! fn main() -> io::Result<()> {
//!     async fn __spargio_body() -> io::Result<()> { BODY }
//!     ::spargio::__private::block_on_attribute(
//!         ::spargio::RuntimeBuilder::new().shards(2),
//!         "#[spargio::main]",
//!         __spargio_body,
//!     )
//! }
//! ```
//!
//! Keeping the body in an inner `async fn` with the user's return type lets
//! `?` and `return` in the body infer their types exactly as in a plain
//! `async fn`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use proc_macro::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};

/// (The attribute `spargio::main`, defined in the `spargio-macros` crate.)
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Main, args, item)
}

/// (The attribute `spargio::test`, defined in the `spargio-macros` crate.)
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Test, args, item)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Main,
    Test,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Kind::Main => "#[spargio::main]",
            Kind::Test => "#[spargio::test]",
        }
    }
}

/// A misuse, reported as `compile_error!` at `span`.
struct Error {
    span: Span,
    msg: String,
}

impl Error {
    fn new(span: Span, msg: impl Into<String>) -> Self {
        Error {
            span,
            msg: msg.into(),
        }
    }

    /// `::core::compile_error!("msg");` with every token at the misuse's span,
    /// so the compiler underlines the user's token.
    fn into_tokens(self) -> TokenStream {
        let span = self.span;
        let punct = |c: char, spacing: Spacing| {
            let mut p = Punct::new(c, spacing);
            p.set_span(span);
            TokenTree::Punct(p)
        };
        let mut msg = Literal::string(&self.msg);
        msg.set_span(span);
        let mut args = Group::new(Delimiter::Parenthesis, TokenStream::from(TokenTree::Literal(msg)));
        args.set_span(span);
        [
            punct(':', Spacing::Joint),
            punct(':', Spacing::Alone),
            TokenTree::Ident(Ident::new("core", span)),
            punct(':', Spacing::Joint),
            punct(':', Spacing::Alone),
            TokenTree::Ident(Ident::new("compile_error", span)),
            punct('!', Spacing::Alone),
            TokenTree::Group(args),
            punct(';', Spacing::Alone),
        ]
        .into_iter()
        .collect()
    }
}

/// The attribute's arguments.
#[derive(Default)]
struct Options {
    shards: Option<usize>,
    /// `IoUring` or `Queue`: the name of the `spargio::Backend` variant.
    backend: Option<&'static str>,
    fallback: Option<bool>,
    /// The path of the spargio crate, when it is renamed in Cargo.toml.
    krate: Option<String>,
}

const KEYS: &str = "`shards`, `backend`, `fallback` and `crate`";

fn parse_options(kind: Kind, args: TokenStream) -> Result<Options, Error> {
    let mut options = Options::default();
    let mut tokens = args.into_iter().peekable();
    while let Some(key_token) = tokens.next() {
        let TokenTree::Ident(key) = &key_token else {
            return Err(Error::new(
                key_token.span(),
                format!("{}: expected `key = value` arguments ({KEYS})", kind.attribute()),
            ));
        };
        let key_name = key.to_string();
        match tokens.next() {
            Some(TokenTree::Punct(p)) if p.as_char() == '=' => {}
            other => {
                return Err(Error::new(
                    other.map_or(key.span(), |t| t.span()),
                    format!(
                        "{}: expected `=` and a value after `{key_name}`",
                        kind.attribute()
                    ),
                ));
            }
        }
        let Some(value) = tokens.next() else {
            return Err(Error::new(
                key.span(),
                format!("{}: `{key_name}` needs a value", kind.attribute()),
            ));
        };
        let duplicate = || {
            Err(Error::new(
                key.span(),
                format!("{}: `{key_name}` is given twice", kind.attribute()),
            ))
        };
        match key_name.as_str() {
            "shards" => {
                if options.shards.is_some() {
                    return duplicate();
                }
                options.shards = Some(parse_shards(kind, &value)?);
            }
            "backend" => {
                if options.backend.is_some() {
                    return duplicate();
                }
                options.backend = Some(match value.to_string().as_str() {
                    "\"io_uring\"" => "IoUring",
                    "\"queue\"" => "Queue",
                    _ => {
                        return Err(Error::new(
                            value.span(),
                            format!("{}: `backend` is \"io_uring\" or \"queue\"", kind.attribute()),
                        ));
                    }
                });
            }
            "fallback" => {
                if options.fallback.is_some() {
                    return duplicate();
                }
                options.fallback = Some(match value.to_string().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Error::new(
                            value.span(),
                            format!("{}: `fallback` is `true` or `false`", kind.attribute()),
                        ));
                    }
                });
            }
            "crate" => {
                if options.krate.is_some() {
                    return duplicate();
                }
                let text = value.to_string();
                let path = text
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .filter(|p| !p.is_empty() && p.parse::<TokenStream>().is_ok());
                let Some(path) = path else {
                    return Err(Error::new(
                        value.span(),
                        format!(
                            "{}: `crate` is the spargio crate's path as a string, e.g. \"::spargio\"",
                            kind.attribute()
                        ),
                    ));
                };
                options.krate = Some(path.to_string());
            }
            _ => {
                return Err(Error::new(
                    key.span(),
                    format!(
                        "{}: unknown argument `{key_name}` (the arguments are {KEYS})",
                        kind.attribute()
                    ),
                ));
            }
        }
        match tokens.next() {
            None => break,
            Some(TokenTree::Punct(p)) if p.as_char() == ',' => {}
            Some(other) => {
                return Err(Error::new(
                    other.span(),
                    format!("{}: expected `,` between arguments", kind.attribute()),
                ));
            }
        }
    }
    Ok(options)
}

/// An integer literal of at least 1 (`4`, `4usize`, `1_0`).
fn parse_shards(kind: Kind, value: &TokenTree) -> Result<usize, Error> {
    let bad = || {
        Error::new(
            value.span(),
            format!("{}: `shards` is an integer of at least 1", kind.attribute()),
        )
    };
    let TokenTree::Literal(lit) = value else {
        return Err(bad());
    };
    let text = lit.to_string();
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if !matches!(suffix, "" | "usize" | "u8" | "u16" | "u32" | "u64") {
        return Err(bad());
    }
    match digits.replace('_', "").parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(bad()),
    }
}

/// The parts of the `async fn` the attribute sits on.
struct Item {
    /// Outer attributes (`#` and its bracket group), as written.
    attrs: Vec<TokenTree>,
    /// `pub`, `pub(crate)`, ... or nothing.
    vis: Vec<TokenTree>,
    name: Ident,
    /// `-> Type`, or nothing.
    ret: Vec<TokenTree>,
    body: Group,
}

fn parse_item(kind: Kind, item: TokenStream) -> Result<Item, (Error, Option<Ident>)> {
    let what = kind.attribute();
    let tokens: Vec<TokenTree> = item.into_iter().collect();
    let mut i = 0;
    let mut attrs = Vec::new();
    while let Some(TokenTree::Punct(p)) = tokens.get(i) {
        if p.as_char() != '#' {
            break;
        }
        attrs.extend(tokens[i..(i + 2).min(tokens.len())].iter().cloned());
        i += 2;
    }
    let mut vis = Vec::new();
    if let Some(TokenTree::Ident(id)) = tokens.get(i)
        && id.to_string() == "pub"
    {
        vis.push(tokens[i].clone());
        i += 1;
        if let Some(TokenTree::Group(g)) = tokens.get(i)
            && g.delimiter() == Delimiter::Parenthesis
        {
            vis.push(tokens[i].clone());
            i += 1;
        }
    }
    // Qualifiers up to `fn`: exactly `async`.
    let mut is_async = false;
    let fn_span = loop {
        match tokens.get(i) {
            Some(TokenTree::Ident(id)) if id.to_string() == "fn" => break id.span(),
            Some(TokenTree::Ident(id)) if id.to_string() == "async" => is_async = true,
            Some(other) => {
                return Err((
                    Error::new(
                        other.span(),
                        format!("{what} goes on a plain `async fn`, without `{other}`"),
                    ),
                    None,
                ));
            }
            None => {
                return Err((
                    Error::new(Span::call_site(), format!("{what} goes on an `async fn`")),
                    None,
                ));
            }
        }
        i += 1;
    };
    i += 1;
    let Some(TokenTree::Ident(name)) = tokens.get(i).cloned() else {
        return Err((
            Error::new(fn_span, format!("{what}: expected the function's name")),
            None,
        ));
    };
    i += 1;
    let fail = |span: Span, msg: String| Err((Error::new(span, msg), Some(name.clone())));
    if !is_async {
        return fail(
            fn_span,
            format!("{what} goes on an `async fn`: add `async` before `fn {name}`"),
        );
    }
    let args = match tokens.get(i) {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis => g,
        Some(TokenTree::Punct(p)) if p.as_char() == '<' => {
            return fail(p.span(), format!("{what}: the function cannot be generic"));
        }
        Some(other) => return fail(other.span(), format!("{what}: expected the argument list")),
        None => return fail(name.span(), format!("{what}: expected the argument list")),
    };
    if !args.stream().is_empty() {
        let msg = match kind {
            Kind::Main => format!("{what}: `{name}` cannot take arguments (read them with std::env::args)"),
            Kind::Test => format!("{what}: a test function cannot take arguments"),
        };
        return fail(args.span(), msg);
    }
    i += 1;
    let Some((TokenTree::Group(body), ret)) = tokens[i..].split_last() else {
        return fail(name.span(), format!("{what}: the function needs a body"));
    };
    if body.delimiter() != Delimiter::Brace {
        return fail(body.span(), format!("{what}: the function needs a body"));
    }
    if let Some(first) = ret.first() {
        let arrow = matches!(
            (first, ret.get(1)),
            (TokenTree::Punct(a), Some(TokenTree::Punct(b))) if a.as_char() == '-' && b.as_char() == '>'
        );
        if !arrow {
            return fail(first.span(), format!("{what}: expected `-> Type` or the body"));
        }
    }
    if let Some(w) = ret
        .iter()
        .find(|t| matches!(t, TokenTree::Ident(id) if id.to_string() == "where"))
    {
        return fail(
            w.span(),
            format!("{what}: the function cannot have a `where` clause"),
        );
    }
    Ok(Item {
        attrs,
        vis,
        name,
        ret: ret.to_vec(),
        body: body.clone(),
    })
}

fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let (error, name) = match (parse_options(kind, args), parse_item(kind, item)) {
        (Ok(options), Ok(item)) => return generate(kind, &options, item),
        (Err(e), Ok(item)) => (e, Some(item.name)),
        (_, Err((e, name))) => (e, name),
    };
    let mut out = error.into_tokens();
    // A placeholder `fn main() {}` keeps "`main` function not found" from
    // burying the real error.
    if kind == Kind::Main
        && let Some(name) = name
        && name.to_string() == "main"
    {
        out.extend(parse("fn main() {}"));
    }
    out
}

fn generate(kind: Kind, options: &Options, item: Item) -> TokenStream {
    let krate = options.krate.as_deref().unwrap_or("::spargio");
    let mut builder = format!("{krate}::RuntimeBuilder::new()");
    // A test gets one shard unless it asks for more: tests run in parallel.
    let shards = options.shards.or(match kind {
        Kind::Main => None,
        Kind::Test => Some(1),
    });
    if let Some(n) = shards {
        builder.push_str(&format!(".shards({n})"));
    }
    if let Some(backend) = options.backend {
        builder.push_str(&format!(".backend({krate}::Backend::{backend})"));
    }
    if let Some(fallback) = options.fallback {
        builder.push_str(&format!(".fallback_to_queue({fallback})"));
    }
    let body_name = Ident::new("__spargio_body", Span::mixed_site());

    // async fn __spargio_body() RET BODY
    let mut inner = TokenStream::new();
    inner.extend(parse("async fn"));
    inner.extend([TokenTree::Ident(body_name.clone())]);
    inner.extend([TokenTree::Group(Group::new(
        Delimiter::Parenthesis,
        TokenStream::new(),
    ))]);
    inner.extend(item.ret.iter().cloned());
    inner.extend([TokenTree::Group(item.body.clone())]);
    // KRATE::__private::block_on_attribute(BUILDER, "what", __spargio_body)
    // The call carries the return type's span, so "must be `Send`" errors
    // about the returned value point at the return type.
    let output_span = item.ret.get(2).map_or(Span::call_site(), TokenTree::span);
    inner.extend(respan(
        parse(&format!("{krate}::__private::block_on_attribute")),
        output_span,
    ));
    let mut call_args = parse(&builder);
    call_args.extend(parse(","));
    call_args.extend([TokenTree::Literal(Literal::string(kind.attribute()))]);
    call_args.extend(parse(","));
    call_args.extend([TokenTree::Ident(body_name)]);
    let mut call_args = Group::new(Delimiter::Parenthesis, call_args);
    call_args.set_span(output_span);
    inner.extend([TokenTree::Group(call_args)]);

    let mut out = TokenStream::new();
    if kind == Kind::Test {
        out.extend(parse("#[::core::prelude::v1::test]"));
    }
    out.extend(item.attrs);
    out.extend(item.vis);
    out.extend(parse("fn"));
    out.extend([TokenTree::Ident(item.name)]);
    out.extend([TokenTree::Group(Group::new(
        Delimiter::Parenthesis,
        TokenStream::new(),
    ))]);
    out.extend(item.ret);
    let mut body = Group::new(Delimiter::Brace, inner);
    body.set_span(item.body.span());
    out.extend([TokenTree::Group(body)]);
    out
}

/// `tokens` with every span set to `span` (groups included).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(g) = &token {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                token = TokenTree::Group(group);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

fn parse(src: &str) -> TokenStream {
    src.parse().expect("the macro's own tokens parse")
}

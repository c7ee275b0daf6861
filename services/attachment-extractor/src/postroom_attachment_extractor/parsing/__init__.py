"""The extractor's parsing library: raw MIME and attachment bytes in, plain values out.

Mail is hostile input, so every module here follows the same rules:

- parsing never raises on malformed input: what is wrong is returned as a defect (a string)
  or as ``DocumentMetadata.error``;
- work is bounded: parts looked at, nesting followed, bytes decoded, characters kept;
- filenames are sanitised before anyone sees them;
- content types are sniffed from the bytes, never trusted from the headers; ZIP archives are
  stored as-is and never unpacked (only their directory is read).

Modules: ``mime`` (parsing and walking the MIME tree), ``body`` (the mail's body text),
``html`` (HTML to text), ``filenames``, ``mediatypes`` (type names and extensions), ``sniff``
(what the bytes are), ``text`` (decoding and cleaning text), ``defects`` (the bounded defect
list), ``formats`` (one module per document format, metadata only). Nothing here does I/O.
"""

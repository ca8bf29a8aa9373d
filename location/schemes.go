package location

// schemes lists, for each use, the URL schemes (lower case, without "://")
// it supports besides local paths and file:// URLs. This table is the one
// place that says it: the error of Parse and the help texts read it, and a
// new kind of store adds its scheme here (with its reader or writer).
var schemes = map[Use][]string{
	ReadStore:  {"http", "https", "s3+http", "s3+https", "sftp"},
	WriteStore: {"s3+http", "s3+https", "sftp"},
	Index:      {"http", "https", "s3+http", "s3+https", "sftp"},
	Cache:      {},
	Output:     {},
	Input:      {},
}

from cible.launch.staging import parse_blob_listing

PAGE = b"""<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="data">
  <Prefix>iris/</Prefix>
  <Blobs>
    <Blob><Name>iris/train.csv</Name><Properties><Content-Length>10</Content-Length></Properties></Blob>
    <Blob><Name>iris/sub/test.csv</Name><Properties /></Blob>
    <Blob><Name>iris/folder-marker/</Name><Properties /></Blob>
  </Blobs>
  <NextMarker>2!96!abc</NextMarker>
</EnumerationResults>"""


def test_a_listing_page_gives_blob_names_and_the_next_marker():
    names, marker = parse_blob_listing(PAGE)
    assert names == ["iris/train.csv", "iris/sub/test.csv"]
    assert marker == "2!96!abc"


def test_the_last_page_has_no_marker():
    names, marker = parse_blob_listing(PAGE.replace(b"<NextMarker>2!96!abc</NextMarker>", b"<NextMarker />"))
    assert len(names) == 2 and marker == ""

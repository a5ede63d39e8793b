"""The REST API (DRF): viewsets, serializers, the permission class and the error handler."""

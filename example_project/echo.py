from otel_channels.consumers import TracedAsyncWebsocketConsumer


class EchoConsumer(TracedAsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)

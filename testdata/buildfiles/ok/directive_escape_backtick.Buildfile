# escape=`
FROM mcr.microsoft.com/windows/servercore:ltsc2022
WORKDIR C:\app
COPY src\ C:\app\
RUN powershell -Command `
    Write-Host hello; `
    Write-Host world
ENV GREETING="say `"hi`"" PATH=C:\bin
